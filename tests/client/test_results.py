"""Folding stream events into a Reply (no server)."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from sluice_client import Attempt, FinishReason, InternalError, ReplyBuilder, ToolCall
from sluice_client.v1 import gateway_pb2 as pb


def fold(*events: pb.Start | pb.Delta | pb.Usage | pb.Finish) -> ReplyBuilder:
    builder = ReplyBuilder()
    for event in events:
        response = pb.ChatResponse()
        getattr(response, event.DESCRIPTOR.name.lower()).CopyFrom(event)
        builder.add(response)
    return builder


FINISH = pb.Finish(reason=pb.FINISH_REASON_STOP, provider_reason="stop")


def test_tool_call_fragments_concatenate_by_index_in_index_order() -> None:
    reply = fold(
        pb.Delta(tool_call=pb.ToolCallDelta(index=1, id="b", name="g", arguments='{"x"')),
        pb.Delta(tool_call=pb.ToolCallDelta(index=0, id="a", name="f", arguments="")),
        pb.Delta(tool_call=pb.ToolCallDelta(index=1, arguments=": 1")),
        pb.Delta(tool_call=pb.ToolCallDelta(index=1, arguments="}")),
        FINISH,
    ).reply()

    assert reply.tool_calls == (ToolCall("a", "f", ""), ToolCall("b", "g", '{"x": 1}'))


def test_a_reply_with_only_a_finish_is_empty() -> None:
    reply = fold(FINISH).reply()

    assert (reply.id, reply.text, reply.reasoning, reply.tool_calls) == ("", "", "", ())
    assert reply.finish_reason == "STOP"
    assert reply.usage.input_tokens == 0


def test_completions_fold_the_same_way() -> None:
    builder = ReplyBuilder()
    builder.add(pb.CompleteResponse(delta=pb.Delta(text="a")))
    builder.add(pb.CompleteResponse(finish=FINISH))

    assert builder.reply().text == "a"


def test_without_finish_the_reply_is_incomplete() -> None:
    with pytest.raises(InternalError, match="without a finish"):
        fold(pb.Start(id="r"), pb.Delta(text="Hel")).reply()


def test_every_proto_finish_reason_has_a_member() -> None:
    for name, value in pb.FinishReason.items():
        assert FinishReason.from_proto(value) == name.removeprefix("FINISH_REASON_")


def test_a_finish_reason_newer_than_the_client_reads_as_other() -> None:
    reason = FinishReason.from_proto(pb.FinishReason.ValueType(99))

    assert reason is FinishReason.OTHER


@pytest.mark.parametrize(
    ("arguments", "parsed"),
    [('{"city": "Paris"}', {"city": "Paris"}), ("", {}), ("  ", {})],
)
def test_parsed_arguments(arguments: str, parsed: dict[str, str]) -> None:
    assert ToolCall("a", "f", arguments).parsed_arguments() == parsed


@pytest.mark.parametrize("arguments", ["[1, 2]", '{"city": '])
def test_arguments_that_are_no_json_object_are_refused(arguments: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (JSONDecodeError or ours, both ValueError)
        ToolCall("a", "f", arguments).parsed_arguments()


def test_attempts_and_cache_hit_reach_the_reply() -> None:
    finish = pb.Finish(reason=pb.FINISH_REASON_STOP, provider_reason="stop")
    finish.attempts.add(
        target="openai/gpt-4o",
        target_index=0,
        outcome=pb.ATTEMPT_OUTCOME_TIMEOUT,
        duration=duration_pb2.Duration(seconds=2),
        error="UNAVAILABLE: openai: no first token within 2 s",
    )
    finish.attempts.add(
        target="anthropic/claude",
        target_index=1,
        outcome=pb.ATTEMPT_OUTCOME_SUCCESS,
        duration=duration_pb2.Duration(nanos=250_000_000),
    )
    reply = fold(pb.Start(id="r"), finish).reply()

    assert reply.attempts == (
        Attempt(
            "openai/gpt-4o", 0, "TIMEOUT", 2.0, "UNAVAILABLE: openai: no first token within 2 s"
        ),
        Attempt("anthropic/claude", 1, "SUCCESS", 0.25, ""),
    )
    assert not reply.cache_hit
    assert fold(pb.Start(id="r", cache_hit=True), FINISH).reply().cache_hit
