"""Giving memory back after a burst of calls.

glibc keeps the memory freed by ended calls (gRPC's buffers, aiohttp's,
Python's objects larger than its small-object pools) for reuse, so a worker's
RSS would stay near the peak of its largest burst. Once a burst has drained,
`malloc_trim` returns the free pages to the system. Elsewhere than glibc
there is nothing to call, and nothing is done."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable

# Below this many calls in flight at the peak, what a burst leaves is small.
MIN_PEAK = 1000
# A burst has drained when in-flight calls fell to this share of its peak.
DRAINED_SHARE = 4


def _malloc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


_TRIM = _malloc_trim()


class HeapTrimmer:
    """Watches the calls in flight; when a burst of at least `MIN_PEAK` has
    fallen to a `DRAINED_SHARE`th of its peak, trims the heap once."""

    def __init__(self, trim: Callable[[], None] | None = _TRIM) -> None:
        self._trim = trim
        self._peak = 0

    def observe(self, in_flight: int) -> None:
        if in_flight > self._peak:
            self._peak = in_flight
        elif self._peak >= MIN_PEAK and in_flight * DRAINED_SHARE <= self._peak:
            self._peak = in_flight
            if self._trim is not None:
                # After the ending call's own frees, off its path.
                asyncio.get_running_loop().call_soon(self._trim)
