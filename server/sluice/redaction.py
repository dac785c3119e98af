"""The process-wide set of secret values, so that no message can leak one.

Config loading registers every resolved secret; `redact` replaces each
occurrence in any text bound for a log, span or error.
"""

from __future__ import annotations

import re

_MIN_SECRET_LENGTH = 4  # shorter values are too common in text to redact safely

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    global _pattern
    if len(value) >= _MIN_SECRET_LENGTH and value not in _secrets:
        _secrets.add(value)
        alternatives = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in alternatives))


def redact(text: str) -> str:
    return text if _pattern is None else _pattern.sub("[REDACTED]", text)
