import asyncio
import platform

import pytest

from sluice import heap
from sluice.heap import MIN_PEAK, HeapTrimmer


async def _burst(trimmer: HeapTrimmer, peak: int, down_to: int) -> None:
    for in_flight in range(1, peak + 1):
        trimmer.observe(in_flight)
    for in_flight in range(peak - 1, down_to - 1, -1):
        trimmer.observe(in_flight)
    await asyncio.sleep(0)  # the trim runs on the loop, after the ending call


async def test_a_drained_burst_trims_the_heap_once() -> None:
    trims: list[None] = []
    trimmer = HeapTrimmer(lambda: trims.append(None))
    await _burst(trimmer, MIN_PEAK, 0)
    assert len(trims) == 1


async def test_a_burst_still_running_or_a_small_one_trims_nothing() -> None:
    trims: list[None] = []
    trimmer = HeapTrimmer(lambda: trims.append(None))
    await _burst(trimmer, MIN_PEAK, MIN_PEAK // 2)  # half still in flight
    assert trims == []
    small = HeapTrimmer(lambda: trims.append(None))
    await _burst(small, MIN_PEAK - 1, 0)
    assert trims == []


async def test_each_new_burst_trims_again() -> None:
    trims: list[None] = []
    trimmer = HeapTrimmer(lambda: trims.append(None))
    await _burst(trimmer, MIN_PEAK, 0)
    await _burst(trimmer, 2 * MIN_PEAK, 0)
    assert len(trims) == 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_malloc_trim_is_found() -> None:
    assert heap._TRIM is not None
    heap._TRIM()  # returns the free pages; must not fail
