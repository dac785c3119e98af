"""Coalescing: runs of deltas of one kind merge; nothing else does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.coalesce import coalesce
from sluice.domain import (
    Event,
    Finish,
    FinishReason,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCallDelta,
    Usage,
)

START = Start("r-1", "m")
USAGE = Usage(3, 4)
FINISH = Finish(FinishReason.STOP)


@pytest.mark.parametrize(
    ("events", "merged"),
    [
        ([], []),
        ([TextDelta("a")], [TextDelta("a")]),
        ([TextDelta("Hel"), TextDelta("lo"), TextDelta("!")], [TextDelta("Hello!")]),
        ([ReasoningDelta("th"), ReasoningDelta("ink")], [ReasoningDelta("think")]),
        (
            [ReasoningDelta("so"), TextDelta("a"), TextDelta("b"), ReasoningDelta("!")],
            [ReasoningDelta("so"), TextDelta("ab"), ReasoningDelta("!")],
        ),
        (
            [ToolCallDelta(0, "c1", "f", '{"a"'), ToolCallDelta(0, arguments=":1}")],
            [ToolCallDelta(0, "c1", "f", '{"a":1}')],
        ),
        (
            # A fragment that names a call starts it, even at the same index.
            [ToolCallDelta(0, "c1", "f", "{}"), ToolCallDelta(0, "c2", "g", "{}")],
            [ToolCallDelta(0, "c1", "f", "{}"), ToolCallDelta(0, "c2", "g", "{}")],
        ),
        (
            [ToolCallDelta(0, "c1", "f", "{"), ToolCallDelta(1, arguments="}")],
            [ToolCallDelta(0, "c1", "f", "{"), ToolCallDelta(1, arguments="}")],
        ),
        (
            [START, TextDelta("a"), TextDelta("b"), USAGE, FINISH],
            [START, TextDelta("ab"), USAGE, FINISH],
        ),
        ([USAGE, USAGE, FINISH, FINISH], [USAGE, USAGE, FINISH, FINISH]),
    ],
    ids=[
        "empty",
        "one",
        "text",
        "reasoning",
        "kinds-apart",
        "tool-call-fragments",
        "two-calls-same-index",
        "two-indexes",
        "start-usage-finish-stay",
        "never-merged",
    ],
)
def test_coalesce(events: list[Event], merged: list[Event]) -> None:
    assert coalesce(events) == merged


DELTAS = st.one_of(
    st.builds(TextDelta, st.text(max_size=3)),
    st.builds(ReasoningDelta, st.text(max_size=3)),
    st.builds(
        ToolCallDelta,
        st.integers(0, 1),
        st.sampled_from(["", "c1"]),
        st.sampled_from(["", "f"]),
        st.text(max_size=3),
    ),
    st.sampled_from([START, USAGE, FINISH]),
)


def texts(events: list[Event]) -> tuple[str, str, dict[int, str]]:
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    arguments: dict[int, str] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            arguments[event.index] = arguments.get(event.index, "") + event.arguments
    return text, reasoning, arguments


@given(st.lists(DELTAS, max_size=12))
def test_coalescing_keeps_what_a_caller_reassembles(events: list[Event]) -> None:
    merged = coalesce(events)
    assert texts(merged) == texts(events)
    assert len(merged) <= len(events)

    # What is never merged stays, in order.
    def others(stream: list[Event]) -> list[Event]:
        return [e for e in stream if not isinstance(e, TextDelta | ReasoningDelta | ToolCallDelta)]

    assert others(merged) == others(events)
    # Every call that was named is still named, once each fragment kind is joined.
    named = [(e.index, e.id, e.name) for e in events if isinstance(e, ToolCallDelta) and e.id]
    assert [
        (e.index, e.id, e.name) for e in merged if isinstance(e, ToolCallDelta) and e.id
    ] == named
