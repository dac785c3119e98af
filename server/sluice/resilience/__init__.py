"""Failure handling for upstream attempts, one concept per module:
`circuit_breaker` (skip a failing target), `retry_budget` (bound retry load),
`backoff` (how long before a retry), `timeouts` (bound an attempt's stream),
and `window` (the sliding counts the first two keep)."""
