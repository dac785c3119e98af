"""The shape every stream event must have when it leaves an adapter.

Decoders read an upstream's JSON trusting its documented shape; valid JSON
of another shape (a number for a text, a string for a count, a count beyond
int32) would otherwise pass into the domain and fail later, in the
serializer, as INTERNAL with a traceback. `misshapen` is the one check, run
by `HttpAdapter.stream` on every event of every provider, which refuses it
as the upstream's fault (UPSTREAM_PROTOCOL_ERROR)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sluice.domain import (
    Embeddings,
    Event,
    Finish,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    Start,
    TextDelta,
    ToolCallDelta,
    Usage,
)

# Counts and indexes are int32 on the wire (gateway.proto), never negative.
MAX_COUNT = 2**31 - 1

# The fields an adapter fills from upstream data, and the type each must have.
_FIELDS: Mapping[type, tuple[tuple[str, type], ...]] = MappingProxyType(
    {
        TextDelta: (("text", str),),
        ReasoningDelta: (("text", str),),
        ReasoningSignature: (("signature", str),),
        RedactedReasoning: (("data", str),),
        ToolCallDelta: (
            ("index", int),
            ("id", str),
            ("name", str),
            ("arguments", str),
            ("signature", str),
        ),
        Start: (("id", str), ("model", str)),
        Usage: (
            ("input_tokens", int),
            ("output_tokens", int),
            ("cached_input_tokens", int),
            ("reasoning_tokens", int),
            ("cache_write_input_tokens", int),
        ),
        Finish: (("provider_reason", str),),
        Embeddings: (),
    }
)


def misshapen(event: Event) -> str | None:
    """What is wrong with `event`'s shape, or None when nothing is."""
    if type(event) is TextDelta and type(event.text) is str:
        return None  # most events of a stream: checked without the loop
    for name, kind in _FIELDS[type(event)]:
        value = getattr(event, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return (
                f"{type(event).__name__}.{name} is a {type(value).__name__}, not a {kind.__name__}"
            )
        if isinstance(value, int) and not 0 <= value <= MAX_COUNT:
            return f"{type(event).__name__}.{name} is {value}, outside 0..{MAX_COUNT}"
    if isinstance(event, Embeddings) and not _numbers(event):
        return "an embedding holds something other than numbers"
    return None


_NUMBER_TYPES = frozenset({float, int})


def _numbers(event: Embeddings) -> bool:
    # The set of a vector's types, built in C: a 3,072-value vector costs a
    # fraction of a per-value Python loop.
    return all(
        isinstance(vector, tuple) and _NUMBER_TYPES.issuperset(map(type, vector))
        for vector in event.vectors
    )
