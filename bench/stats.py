"""Summary statistics of one load-generator run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict


class Distribution(TypedDict):
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def distribution(samples: Sequence[float]) -> Distribution | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return Distribution(
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        max=ordered[-1],
        mean=sum(ordered) / len(ordered),
    )


class LoadResult(TypedDict):
    """What a load generator reports for its measurement window."""

    requests: int  # completed in the window, successfully
    errors: int
    error_sample: str
    seconds: float  # window length
    latency_ms: Distribution | None  # request sent -> last byte / message
    ttfc_ms: Distribution | None  # request sent -> first content chunk
    cpu_seconds: dict[str, float]  # CPU time of each watched process group
    client_cpu_seconds: float
    client_connections: int  # connections the load generator opened
    # Chat streams whose start said cache_hit, and those that did not, in the
    # window (cache rows: grpc-chat with --cache; 0 elsewhere).
    cache_hits: int
    cache_misses: int
    # Requests that succeeded in the whole run, warmup included (Python load
    # generators; 0 for the native ones): the denominator of per-call counts
    # read once per run, such as Redis's commands.
    calls_total: int
    # Paced rows: each gap between two chunks (messages, SSE events) at the
    # client minus the upstream's spacing of the tokens between them.
    added_gap_ms: Distribution | None
    # Burst rows: calls by final status ("OK", "CANCELLED", ...), the refusals
    # (RESOURCE_EXHAUSTED, UNAVAILABLE) that carried a RetryInfo, and the
    # most streams open at once (first message received, not yet ended).
    statuses: dict[str, int]
    retry_hinted: int
    peak_open: int
