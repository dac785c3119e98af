"""Coalescing: the deltas that are ready together leave in one message.

Each message the gateway writes costs it about as much as the token in it
(a gRPC message is a syscall and a completion round trip), so deltas that
are already decoded and waiting when a message is written go into that one
message: text with text, reasoning with reasoning, the fragments of one tool
call together. A delta may therefore hold any number of tokens. `Start`,
`Usage` and `Finish` are never merged, and nothing waits for more: a stream
whose tokens arrive one at a time still sends one message per token.
"""

from __future__ import annotations

from collections.abc import Sequence

from sluice.domain import (
    Event,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    TextDelta,
    ToolCallDelta,
)

# The events that carry the answer itself; all but signatures and redacted
# reasoning (each closes or is a whole block) merge.
DELTAS = (TextDelta, ReasoningDelta, ReasoningSignature, RedactedReasoning, ToolCallDelta)


def coalesce(events: Sequence[Event]) -> list[Event]:
    """`events` with each run of deltas of the same kind merged into one."""
    merged: list[Event] = []
    for event in events:
        joined = _joined(merged[-1], event) if merged else None
        if joined is None:
            merged.append(event)
        else:
            merged[-1] = joined
    return merged


def _joined(first: Event, then: Event) -> Event | None:
    """`first` and `then` as one delta; None when they are not one kind."""
    if type(first) is not type(then):
        return None
    if isinstance(first, TextDelta):
        assert isinstance(then, TextDelta)
        return TextDelta(first.text + then.text)
    if isinstance(first, ReasoningDelta):
        assert isinstance(then, ReasoningDelta)
        return ReasoningDelta(first.text + then.text)
    if isinstance(first, ToolCallDelta):
        assert isinstance(then, ToolCallDelta)
        # A fragment naming a call starts that call: only continuations join.
        if then.index == first.index and not then.id and not then.name:
            arguments = first.arguments + then.arguments
            return ToolCallDelta(first.index, first.id, first.name, arguments, first.signature)
    return None
