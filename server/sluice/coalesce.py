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
from typing import cast

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
    """`events` with each run of deltas of the same kind merged into one.
    A run's texts are joined once, not pairwise (a burst is dozens of deltas)."""
    merged: list[Event] = []
    end = len(events)
    first = 0
    while first < end:
        head = events[first]
        last = first + 1
        while last < end and _continues(head, events[last]):
            last += 1
        merged.append(head if last == first + 1 else _merged(head, events[first + 1 : last]))
        first = last
    return merged


def _continues(head: Event, then: Event) -> bool:
    """Whether `then` joins the run that `head` opens."""
    kind = type(head)
    if kind is not type(then):
        return False
    if kind is TextDelta or kind is ReasoningDelta:
        return True
    if isinstance(head, ToolCallDelta):
        assert isinstance(then, ToolCallDelta)
        # A fragment naming a call starts that call: only continuations join.
        return then.index == head.index and not then.id and not then.name
    return False


def _merged(head: Event, rest: Sequence[Event]) -> Event:
    """The run of `head` and `rest` (its continuations: `_continues` checked
    their kind) as one delta."""
    if isinstance(head, TextDelta):
        texts = cast("Sequence[TextDelta]", rest)
        return TextDelta(head.text + "".join([event.text for event in texts]))
    if isinstance(head, ReasoningDelta):
        thoughts = cast("Sequence[ReasoningDelta]", rest)
        return ReasoningDelta(head.text + "".join([event.text for event in thoughts]))
    assert isinstance(head, ToolCallDelta)
    fragments = cast("Sequence[ToolCallDelta]", rest)
    arguments = head.arguments + "".join([event.arguments for event in fragments])
    return ToolCallDelta(head.index, head.id, head.name, arguments, head.signature)
