"""How much of an upstream's answer Sluice holds at once: every body an
upstream controls is read with a bound (README, Limits), so a hostile or
broken upstream costs a bounded amount of memory, never the process."""

from __future__ import annotations

from dataclasses import dataclass

# The most of an error body read: enough for any provider's error JSON, and a
# proxy's 1 GiB error page costs no more.
MAX_ERROR_BODY = 64 * 1024
# A unary answer (embeddings) is held whole to be parsed: 64 MiB is some
# 8,000 vectors of 3,072 floats as JSON text.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# One stream event (an SSE event, an NDJSON line, an eventstream frame): far
# above any real delta, which is a few hundred bytes.
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
# What the route keys `max_response_bytes` and `max_event_bytes` may be set to.
MAX_CONFIGURABLE_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BodyBounds:
    """A target's bounds on what it reads (route keys `max_response_bytes`,
    `max_event_bytes`); exceeding one closes the upstream's connection."""

    response: int = DEFAULT_MAX_RESPONSE_BYTES
    event: int = DEFAULT_MAX_EVENT_BYTES


DEFAULT_BOUNDS = BodyBounds()
