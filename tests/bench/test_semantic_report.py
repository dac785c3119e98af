"""The report's line for issue 15's target: semantic hit CPU / upstream call CPU."""

from __future__ import annotations

from bench import report
from tests.bench.outcomes import outcome


def test_the_ratio_of_a_semantic_hit_to_the_upstream_call_it_saves() -> None:
    outcomes = [
        outcome("sluice", cpu_seconds=1.5),
        outcome("sluice-embed", cpu_seconds=0.9),
        outcome("sluice-semantic", cpu_seconds=0.6, hits=1000),
    ]

    [entry] = report.semantic_hits(outcomes)

    assert entry["ratio"] == 0.6 / 1.5
    assert entry["embed_cpu_ms_per_request"] == 0.9
    assert entry["exact_hit_cpu_ms_per_request"] is None  # no sluice-cache row ran
    [line] = report.semantic_lines([entry])
    assert "semantic hit CPU / upstream call CPU = 0.40 (0.600 / 1.500 ms" in line
    assert "target below 0.5: met" in line
    assert "semantic hits in the window: 100.0%" in line
    text = report.markdown(outcomes, {})
    assert "### Semantic cache: a hit against the upstream call it saves" in text
    assert report.record(outcomes, {})["semantic_hits"] == [entry]


def test_a_hit_may_miss_against_the_burst_and_meet_against_the_paced_answer() -> None:
    outcomes = [
        outcome("sluice", cpu_seconds=1.5),
        outcome("sluice-paced-200", cpu_seconds=4.0),
        outcome("sluice-semantic", cpu_seconds=1.6, hits=1000),
    ]

    [entry] = report.semantic_hits(outcomes)

    assert entry["paced_ratio"] == 1.6 / 4.0
    [line] = report.semantic_lines([entry])
    assert "= 1.07 (" in line
    assert "target below 0.5: not met) against the answer streamed at once" in line
    assert "0.40 (1.600 / 4.000 ms; met) against the answer streamed a token each 20 ms" in line


def test_without_the_upstream_row_the_ratio_is_not_made_up() -> None:
    [line] = report.semantic_lines(
        report.semantic_hits([outcome("sluice-semantic", cpu_seconds=1.6, hits=1000)])
    )

    assert "= - (" in line
    assert "no `sluice` row in this run" in line
    assert "no `sluice-paced-200` row in this run" in line
    assert report.semantic_hits([outcome("sluice", cpu_seconds=1.5)]) == []
