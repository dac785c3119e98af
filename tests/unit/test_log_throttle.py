"""Rate-limited logging: a caller who repeats a bad request cannot flood the log."""

from __future__ import annotations

import logging

import pytest

from sluice.log_throttle import MAX_CAUSES, ThrottledLog

LOGGER = "tests.log_throttle"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def test_one_line_per_cause_per_interval_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = ThrottledLog(logging.getLogger(LOGGER), interval=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, LOGGER):
        for _ in range(5):
            log.report("corrupt", "refused: %s", "corrupt")
        log.report("utf8", "refused: %s", "utf8")
        clock.now += 59.0
        log.report("corrupt", "refused: %s", "corrupt")
        clock.now += 1.0
        log.report("corrupt", "refused: %s", "corrupt")
        log.report("corrupt", "refused: %s", "corrupt")
    assert lines(caplog) == [
        "refused: corrupt",
        "refused: utf8",
        "refused: corrupt (and 5 more like it in the last 60s)",
    ]
    assert all(record.exc_info is None for record in caplog.records)


def test_causes_past_the_table_share_one_entry(caplog: pytest.LogCaptureFixture) -> None:
    log = ThrottledLog(logging.getLogger(LOGGER), clock=Clock())
    with caplog.at_level(logging.WARNING, LOGGER):
        for i in range(MAX_CAUSES + 50):
            log.report(f"cause {i}", "refused: %s", i)
    assert len(lines(caplog)) == MAX_CAUSES + 1
