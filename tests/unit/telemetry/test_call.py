"""The access log's time: RFC 3339 UTC to the millisecond, as datetime
formats it, from a cache of the second's formatting."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from sluice.telemetry.call import _timestamp


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_the_time_is_datetimes_to_the_millisecond(seconds: float) -> None:
    expected = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    assert _timestamp(seconds) == expected.replace("+00:00", "Z")
