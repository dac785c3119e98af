"""Domain events -> proto response messages: every event type and field."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf.duration_pb2 import Duration

from sluice import domain
from sluice.api.responses import (
    ROUTE_TYPES,
    attempt,
    chat_response,
    completion_response,
    finish,
    start,
    usage,
)
from sluice_client.v1 import gateway_pb2 as pb

ATTEMPTS = (
    domain.AttemptRecord(
        target="openai/gpt-4o",
        target_index=0,
        outcome=domain.AttemptOutcome.TIMEOUT,
        duration=2.5,
        error="UNAVAILABLE: openai: first token timeout",
    ),
    domain.AttemptRecord(
        target="anthropic/claude",
        target_index=1,
        outcome=domain.AttemptOutcome.SUCCESS,
        duration=0.75,
    ),
)
PB_ATTEMPTS = [
    pb.Attempt(
        target="openai/gpt-4o",
        target_index=0,
        outcome=pb.ATTEMPT_OUTCOME_TIMEOUT,
        duration=Duration(seconds=2, nanos=500_000_000),
        error="UNAVAILABLE: openai: first token timeout",
    ),
    pb.Attempt(
        target="anthropic/claude",
        target_index=1,
        outcome=pb.ATTEMPT_OUTCOME_SUCCESS,
        duration=Duration(nanos=750_000_000),
    ),
]
START = domain.Start(
    id="resp-1", model="gpt-4o-2024", provider="openai", route="chat", cache_hit=True
)
PB_START = pb.Start(
    id="resp-1", model="gpt-4o-2024", provider="openai", route="chat", cache_hit=True
)
USAGE = domain.Usage(input_tokens=12, output_tokens=34, cached_input_tokens=5, reasoning_tokens=6)
PB_USAGE = pb.Usage(input_tokens=12, output_tokens=34, cached_input_tokens=5, reasoning_tokens=6)
FINISH = domain.Finish(domain.FinishReason.STOP, provider_reason="end_turn", attempts=ATTEMPTS)
PB_FINISH = pb.Finish(
    reason=pb.FINISH_REASON_STOP, provider_reason="end_turn", attempts=PB_ATTEMPTS
)

Payload = pb.Start | pb.Delta | pb.Usage | pb.Finish

# What chat and completion streams share: (event, the response's oneof field, its value).
STREAM_EVENTS = [
    (domain.TextDelta("Hel"), "delta", pb.Delta(text="Hel")),
    (domain.TextDelta(""), "delta", pb.Delta(text="")),
    (domain.ReasoningDelta("hmm"), "delta", pb.Delta(reasoning="hmm")),
    (domain.Start(id="", model=""), "start", pb.Start()),
    (START, "start", PB_START),
    (domain.Usage(), "usage", pb.Usage()),
    (USAGE, "usage", PB_USAGE),
    (domain.Finish(domain.FinishReason.LENGTH), "finish", pb.Finish(reason=pb.FINISH_REASON_LENGTH)),
    (FINISH, "finish", PB_FINISH),
]  # fmt: skip
STREAM_EVENT_IDS = [
    "text",
    "empty-text-is-still-a-text-delta",
    "reasoning",
    "start-defaults",
    "start",
    "usage-zero",
    "usage",
    "finish-defaults",
    "finish-with-attempts",
]


def assert_carries(
    response: pb.ChatResponse | pb.CompleteResponse, name: str, value: Payload
) -> None:
    # The set oneof fields, not only the values: an empty delta must still be a delta.
    assert response.WhichOneof("event") == name
    assert getattr(response, name) == value
    if isinstance(value, pb.Delta):
        assert response.delta.WhichOneof("content") == value.WhichOneof("content")


@pytest.mark.parametrize(
    ("event", "name", "value"),
    [
        *STREAM_EVENTS,
        (
            domain.ToolCallDelta(index=2, id="call_1", name="get_weather", arguments='{"ci'),
            "delta",
            pb.Delta(tool_call=pb.ToolCallDelta(index=2, id="call_1", name="get_weather", arguments='{"ci')),
        ),
        (domain.ToolCallDelta(index=0), "delta", pb.Delta(tool_call=pb.ToolCallDelta())),
    ],
    ids=[*STREAM_EVENT_IDS, "tool-call", "tool-call-defaults"],
)  # fmt: skip
def test_chat_response(event: domain.Event, name: str, value: Payload) -> None:
    assert_carries(chat_response(event), name, value)


@pytest.mark.parametrize(("event", "name", "value"), STREAM_EVENTS, ids=STREAM_EVENT_IDS)
def test_completion_response(event: domain.Event, name: str, value: Payload) -> None:
    assert_carries(completion_response(event), name, value)


@pytest.mark.parametrize(
    ("convert", "event", "message"),
    [
        (chat_response, domain.Embeddings(((0.5,),)), "no chat response for Embeddings"),
        (completion_response, domain.Embeddings(((0.5,),)), "no completion response for Embeddings"),
        (completion_response, domain.ToolCallDelta(index=0), "no completion response for ToolCallDelta"),
    ],
    ids=["chat-embeddings", "completion-embeddings", "completion-tool-call"],
)  # fmt: skip
def test_an_event_a_stream_cannot_carry_is_a_bug(
    convert: Callable[[domain.Event], object], event: domain.Event, message: str
) -> None:
    with pytest.raises(TypeError) as caught:
        convert(event)
    assert str(caught.value) == message


def test_start() -> None:
    assert start(START) == PB_START


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (USAGE, PB_USAGE),
        (
            domain.Usage(input_tokens=3, reported=False),
            pb.Usage(input_tokens=3, unreported=True),
        ),
        (domain.Usage(), pb.Usage(unreported=False)),
    ],
    ids=["reported", "unreported", "zero"],
)
def test_usage(event: domain.Usage, expected: pb.Usage) -> None:
    assert usage(event) == expected


def test_finish() -> None:
    assert finish(FINISH) == PB_FINISH


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (domain.FinishReason.STOP, pb.FINISH_REASON_STOP),
        (domain.FinishReason.LENGTH, pb.FINISH_REASON_LENGTH),
        (domain.FinishReason.TOOL_CALLS, pb.FINISH_REASON_TOOL_CALLS),
        (domain.FinishReason.CONTENT_FILTER, pb.FINISH_REASON_CONTENT_FILTER),
        (domain.FinishReason.OTHER, pb.FINISH_REASON_OTHER),
    ],
    ids=lambda value: getattr(value, "name", ""),
)
def test_each_finish_reason(
    reason: domain.FinishReason, expected: pb.FinishReason.ValueType
) -> None:
    assert finish(domain.Finish(reason)).reason == expected


def test_every_finish_reason_has_a_proto_reason() -> None:
    reasons = {finish(domain.Finish(reason)).reason for reason in domain.FinishReason}
    assert pb.FINISH_REASON_UNSPECIFIED not in reasons
    assert len(reasons) == len(domain.FinishReason)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (domain.AttemptOutcome.SUCCESS, pb.ATTEMPT_OUTCOME_SUCCESS),
        (domain.AttemptOutcome.FAILURE, pb.ATTEMPT_OUTCOME_FAILURE),
        (domain.AttemptOutcome.TIMEOUT, pb.ATTEMPT_OUTCOME_TIMEOUT),
        (domain.AttemptOutcome.SKIPPED, pb.ATTEMPT_OUTCOME_SKIPPED),
    ],
    ids=lambda value: getattr(value, "name", ""),
)
def test_each_attempt_outcome(
    outcome: domain.AttemptOutcome, expected: pb.AttemptOutcome.ValueType
) -> None:
    record = domain.AttemptRecord("mock/m", 3, outcome, 0.0, error="INTERNAL: boom")
    assert attempt(record) == pb.Attempt(
        target="mock/m",
        target_index=3,
        outcome=expected,
        duration=Duration(),
        error="INTERNAL: boom",
    )


def test_every_attempt_outcome_has_a_proto_outcome() -> None:
    outcomes = {
        attempt(domain.AttemptRecord("mock/m", 0, outcome, 0.0)).outcome
        for outcome in domain.AttemptOutcome
    }
    assert pb.ATTEMPT_OUTCOME_UNSPECIFIED not in outcomes
    assert len(outcomes) == len(domain.AttemptOutcome)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, (0, 0)),
        (1e-9, (0, 1)),
        (0.25, (0, 250_000_000)),
        (1.5, (1, 500_000_000)),
        (60.0, (60, 0)),
        # Rounded to the nanosecond, carrying into the seconds.
        (2.9999999999, (3, 0)),
    ],
    ids=["zero", "one-nanosecond", "quarter", "one-and-a-half", "minute", "rounds-up-into-seconds"],
)
def test_attempt_duration(seconds: float, expected: tuple[int, int]) -> None:
    duration = attempt(
        domain.AttemptRecord("mock/m", 0, domain.AttemptOutcome.SUCCESS, seconds)
    ).duration
    assert (duration.seconds, duration.nanos) == expected


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (domain.Operation.CHAT, pb.ROUTE_TYPE_CHAT),
        (domain.Operation.COMPLETION, pb.ROUTE_TYPE_COMPLETIONS),
        (domain.Operation.EMBEDDING, pb.ROUTE_TYPE_EMBEDDINGS),
    ],
    ids=lambda value: getattr(value, "name", ""),
)
def test_each_operation_has_its_route_type(
    operation: domain.Operation, expected: pb.RouteType.ValueType
) -> None:
    assert ROUTE_TYPES[operation] == expected


def test_route_types_cover_every_operation() -> None:
    assert set(ROUTE_TYPES) == set(domain.Operation)
