"""How long to wait before retrying a target: exponential backoff with full
jitter (uniform over [0, cap], so clients that failed together spread out),
and never sooner than the upstream's Retry-After."""

from __future__ import annotations

import random

from sluice.config.schema import BackoffConfig


def retry_delay(
    retry: int, backoff: BackoffConfig, retry_after: float | None, rng: random.Random
) -> float | None:
    """Seconds before retry number `retry` (0 for the first), or None when the
    upstream asks for a wait beyond `backoff.max`: better another target than
    a caller kept waiting that long."""
    if retry_after is not None and retry_after > backoff.max:
        return None
    jittered = rng.uniform(0.0, min(backoff.max, backoff.initial * 2**retry))
    return max(jittered, retry_after or 0.0)
