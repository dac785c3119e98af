"""A row's outcome as the harness records it, made up for report and check tests."""

from __future__ import annotations

from bench.scenarios import SCENARIOS, Outcome
from bench.stats import LoadResult


def outcome(name: str, *, requests: int = 1000, cpu_seconds: float = 1.0, hits: int = 0) -> Outcome:
    """Row `name` at concurrency 16, having served `requests` in one second
    on `cpu_seconds` of server CPU; a cache row had `hits` of them from its cache."""
    load = LoadResult(
        requests=requests,
        errors=0,
        error_sample="",
        seconds=1.0,
        latency_ms=None,
        ttfc_ms=None,
        cpu_seconds={"server": cpu_seconds},
        client_cpu_seconds=0.0,
        client_connections=1,
        cache_hits=hits,
        cache_misses=requests - hits if SCENARIOS[name].cached else 0,
        calls_total=requests,
        added_gap_ms=None,
        statuses={},
        retry_hinted=0,
        peak_open=0,
    )
    return Outcome(SCENARIOS[name], 16, load=load)
