"""Periods and rates as the config writes them: `minute`, `10 seconds`,
`hour`, `day`; a rate is `<n>/<period>` (`100/minute`, `5000/10 seconds`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_PERIOD = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*)?(second|minute|hour|day)s?\s*$")


def parse_period(text: str) -> float:
    """Seconds in a period such as `minute` or `10 seconds`."""
    match = _PERIOD.match(text)
    if match is None:
        raise ValueError(f"period {text!r} is not like 'minute', '10 seconds', 'hour' or 'day'")
    count = float(match.group(1)) if match.group(1) else 1.0
    if count <= 0:
        raise ValueError(f"period {text!r} must be longer than zero")
    return count * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` units per `period` seconds."""

    count: int
    period: float
    text: str  # as configured, for messages

    @classmethod
    def parse(cls, text: str) -> Rate:
        count, slash, period = text.partition("/")
        if not slash or not count.strip().isdigit() or int(count) <= 0:
            raise ValueError(f"rate {text!r} is not like '100/minute'")
        return cls(int(count), parse_period(period), text.strip())
