"""The API fields of reasoning round-trips and prompt caching: proto to
domain (with the INVALID_ARGUMENTs that name the field) and domain events to
proto deltas."""

from __future__ import annotations

from sluice import domain
from sluice.api.requests import chat_request
from sluice.api.responses import chat_response, completion_response, usage
from sluice.config.schema import RequestLimits
from sluice_client.v1 import gateway_pb2 as pb
from tests.unit.api.test_requests import assert_invalid

QUESTION = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="weather?")])


def with_assistant(*parts: pb.Part) -> pb.ChatRequest:
    assistant = pb.Message(role=pb.ROLE_ASSISTANT, parts=list(parts))
    return pb.ChatRequest(route="r", messages=[QUESTION, assistant])


def test_reasoning_parts_and_call_signatures_are_carried() -> None:
    request = with_assistant(
        pb.Part(reasoning=pb.Reasoning(text="Let me look.", signature="c2ln")),
        pb.Part(reasoning=pb.Reasoning(redacted_data="b3BhcXVl")),
        pb.Part(tool_call=pb.ToolCall(id="c1", name="weather", arguments="{}", signature="Z3M=")),
    )
    assert chat_request(request).messages[1].parts == (
        domain.ReasoningPart(text="Let me look.", signature="c2ln"),
        domain.ReasoningPart(redacted_data="b3BhcXVl"),
        domain.ToolCallPart("c1", "weather", "{}", signature="Z3M="),
    )


def test_reasoning_is_refused_where_it_cannot_be() -> None:
    in_user_turn = pb.ChatRequest(
        route="r",
        messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(reasoning=pb.Reasoning(text="x"))])],
    )
    assert_invalid(
        lambda: chat_request(in_user_turn),
        "messages[0].parts[0].reasoning",
        "reasoning parts are not allowed in user messages",
    )
    assert_invalid(
        lambda: chat_request(with_assistant(pb.Part(reasoning=pb.Reasoning()))),
        "messages[1].parts[0].reasoning",
        "reasoning needs text, a signature or redacted_data",
    )
    mixed = pb.Reasoning(text="x", redacted_data="b3BhcXVl")
    assert_invalid(
        lambda: chat_request(with_assistant(pb.Part(reasoning=mixed))),
        "messages[1].parts[0].reasoning.redacted_data",
        "redacted reasoning has no text or signature of its own",
    )


def test_signatures_count_against_the_request_text_bound() -> None:
    request = with_assistant(pb.Part(reasoning=pb.Reasoning(text="ok", signature="s" * 100)))
    assert_invalid(
        lambda: chat_request(request, RequestLimits(max_text_chars=100)),
        "messages[1].parts[0].reasoning.signature",
        "the request's text passes 100 characters at messages[1].parts[0].reasoning.signature "
        "(server.request_limits.max_text_chars)",
    )


def test_cache_breakpoints_on_parts_messages_and_tools() -> None:
    system = pb.Message(
        role=pb.ROLE_SYSTEM,
        parts=[
            pb.Part(text="rules", cache_breakpoint=True, cache_ttl=pb.CACHE_TTL_ONE_HOUR),
            pb.Part(text="more"),
        ],
    )
    question = pb.Message(
        role=pb.ROLE_USER,
        parts=[pb.Part(text="a"), pb.Part(text="b")],
        cache_breakpoint=True,
        cache_ttl=pb.CACHE_TTL_FIVE_MINUTES,
    )
    tool = pb.Tool(name="weather", cache_breakpoint=True)
    request = chat_request(pb.ChatRequest(route="r", messages=[system, question], tools=[tool]))
    assert request.messages[0].parts == (
        domain.TextPart("rules", cache=domain.CacheTtl.ONE_HOUR),
        domain.TextPart("more"),
    )
    # A message's breakpoint is its last part's.
    assert request.messages[1].parts == (
        domain.TextPart("a"),
        domain.TextPart("b", cache=domain.CacheTtl.FIVE_MINUTES),
    )
    assert request.tools[0].cache is domain.CacheTtl.DEFAULT


def test_a_cache_ttl_needs_a_breakpoint() -> None:
    part = pb.Part(text="a", cache_ttl=pb.CACHE_TTL_ONE_HOUR)
    request = pb.ChatRequest(route="r", messages=[pb.Message(role=pb.ROLE_USER, parts=[part])])
    assert_invalid(
        lambda: chat_request(request),
        "messages[0].parts[0].cache_ttl",
        "cache_ttl needs cache_breakpoint",
    )
    tool = pb.Tool(name="t", cache_ttl=pb.CACHE_TTL_FIVE_MINUTES)
    assert_invalid(
        lambda: chat_request(pb.ChatRequest(route="r", messages=[QUESTION], tools=[tool])),
        "tools[0].cache_ttl",
        "cache_ttl needs cache_breakpoint",
    )


def test_signature_events_become_their_deltas() -> None:
    assert chat_response(domain.ReasoningSignature("c2ln")).delta == pb.Delta(
        reasoning_signature="c2ln"
    )
    assert completion_response(domain.RedactedReasoning("b3BhcXVl")).delta == pb.Delta(
        reasoning_redacted="b3BhcXVl"
    )
    delta = chat_response(domain.ToolCallDelta(0, "c1", "weather", "{}", "Z3M=")).delta
    assert delta.tool_call == pb.ToolCallDelta(
        index=0, id="c1", name="weather", arguments="{}", signature="Z3M="
    )
    assert usage(domain.Usage(input_tokens=10, cache_write_input_tokens=7)) == pb.Usage(
        input_tokens=10, cache_write_input_tokens=7
    )
