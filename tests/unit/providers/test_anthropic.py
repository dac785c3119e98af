"""Anthropic adapter: request building, stream decoding on recorded bytes
split at every boundary, and error mapping. No network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    Role,
    Start,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)
from sluice.errors import GatewayError, Status
from sluice.providers.anthropic import AnthropicAdapter, AnthropicSettings, AnthropicStreamDecoder
from sluice.providers.http import HttpClientPool
from tests.recordings import recording, splits

MODEL = "claude-sonnet-4-20250514"
# The signature_delta of anthropic_messages_stream.txt.
RECORDED_SIGNATURE = (
    "EtYDCkYICxgCKkAVHEWRYo6RgSMs4ZZDX4gW16kdfp2EIXftcLesVephGa/p1m+1Y8mRQPvvKOQICrOk"
    "GKYoJBKSNLJ4ukI/mo6LEgx7FMTwIpYzM2WTWT8aDKY6c2i52xIX2NYX3SIwY5gI8frldE4pwUhseod0"
    "S0xZV2hTAQhqMCOu4+effAu250K2RPrqrO98+VD/hjF9Kr0C7EzGQ7dZ7MNwrkE+tCARkzIRk5Wtv8vV"
    "AhADlMcs78QvxmjOToU65I91p7w2/VP11peDoc9+7AbyldRKGp3chNnQgXHI7ObK89s0ltFBGrLf6teg"
    "aQL9httOtcUGCioZnI9LI9vJHMlQeoZiiWRq8hVbHlHc3f6BwBqlUJhYUyk7ld34UoaSNc5UKUNuLAmk"
    "OLg3KQLdbI7b3BQVdsWOhNTKd12fRJQcOLhXNSCv7hQ9FtWfV5C+pX59xF6YYIO3TCPUqWSubCtqdrDE"
    "oQVWdHtyveFA+4iixZxyqZ7Ea+kzbmc/6pXxwO2MX0rHrbe/yXWYAmU/XxY9HJTzXEO+CibGQOAaHdC1"
    "1s8gOCFb8EWt3ALguFfj/p2SJtqybC44Alrjnhjqk+7Mi+DoMcINUh7SCK9rVl4VeDhPFVAYAQ=="
)
URL = "https://api.anthropic.com/v1/messages"


def adapter(**settings: Any) -> AnthropicAdapter:
    config = AnthropicSettings(provider="anthropic", name=MODEL, **settings)
    created = config.create_adapter(HttpClientPool())
    assert isinstance(created, AnthropicAdapter)
    return created


def chat(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest("claude", messages or (user("Hi"),), **fields)


def user(text: str) -> Message:
    return Message(Role.USER, (TextPart(text),))


def error_fields(error: GatewayError) -> tuple[Status, str, str, dict[str, str]]:
    return error.status, error.reason, error.message, error.metadata


# --- settings ------------------------------------------------------------------


def test_settings_accept_prefixed_key_and_base() -> None:
    built = adapter(
        anthropic_api_key="sk-ant-test", anthropic_api_base="https://proxy.example/anthropic/"
    ).build(chat())
    assert built.url == "https://proxy.example/anthropic/v1/messages"
    assert built.headers["x-api-key"] == "sk-ant-test"


def test_settings_reject_zero_default_max_tokens() -> None:
    with pytest.raises(ValueError, match="default_max_tokens"):
        AnthropicSettings(provider="anthropic", name=MODEL, default_max_tokens=0)


# --- build ---------------------------------------------------------------------


def test_build_minimal_request() -> None:
    built = adapter(api_key="sk-ant-test").build(chat(user("Hi")))
    assert built.method == "POST"
    assert built.url == URL
    assert built.headers == {
        "x-api-key": "sk-ant-test",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    assert built.json == {
        "model": MODEL,
        "max_tokens": 4096,
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }


def test_build_without_key_sends_no_key_header() -> None:
    headers = adapter(version="2024-01-01").build(chat()).headers
    assert headers == {"anthropic-version": "2024-01-01", "content-type": "application/json"}


def test_build_moves_system_messages_to_top_level() -> None:
    request = chat(
        Message(Role.SYSTEM, (TextPart("Be brief."), TextPart(""))),
        user("Hi"),
        Message(Role.SYSTEM, (TextPart("Answer in French."),)),
        user("Again"),
    )
    body = adapter().build(request).json
    assert body["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Answer in French."},
    ]
    # With the system turn gone, the two user turns are adjacent: one turn.
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "Again"}],
        }
    ]


def test_build_tool_round_trip_merges_results_into_one_user_turn() -> None:
    request = chat(
        user("Weather in Paris and Rome?"),
        Message(
            Role.ASSISTANT,
            (
                # Clients often send empty text beside tool calls; Anthropic rejects it.
                TextPart(""),
                ToolCallPart("toolu_1", "get_weather", '{"city": "Paris"}'),
                ToolCallPart("toolu_2", "get_weather", '{"city": "Rome"}'),
                ToolCallPart("toolu_3", "get_time", ""),
            ),
        ),
        Message(Role.TOOL, (ToolResultPart("toolu_1", "18C"),)),
        Message(Role.TOOL, (ToolResultPart("toolu_2", "no data", is_error=True),)),
        Message(Role.TOOL, (ToolResultPart("toolu_3", "12:00"),)),
        user("Thanks"),
    )
    body = adapter().build(request).json
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
                {"type": "tool_use", "id": "toolu_3", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "no data",
                    "is_error": True,
                },
                {"type": "tool_result", "tool_use_id": "toolu_3", "content": "12:00"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


def test_build_images_inline_and_by_url() -> None:
    message = Message(
        Role.USER,
        (
            ImagePart(data=b"\x89PNG", media_type="image/png"),
            ImagePart(url="https://example.com/cat.jpg"),
            TextPart("What are these?"),
        ),
    )
    assert adapter().build(chat(message)).json["messages"][0]["content"] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What are these?"},
    ]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [("{not json", "not JSON"), ('["a"]', "must be a JSON object")],
)
def test_build_rejects_bad_tool_call_arguments(arguments: str, problem: str) -> None:
    request = chat(
        user("Hi"),
        Message(Role.ASSISTANT, (TextPart("Let me look."), ToolCallPart("t", "f", arguments))),
    )
    with pytest.raises(GatewayError, match=problem) as caught:
        adapter().build(request)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "messages[1].parts[1].tool_call.arguments"


def test_build_tools() -> None:
    tools = (
        Tool("get_weather", "Weather of a city", {"type": "object", "properties": {}}),
        Tool("now", "", {}),
    )
    assert adapter().build(chat(tools=tools)).json["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather of a city",
            "input_schema": {"type": "object", "properties": {}},
        },
        {"name": "now", "input_schema": {"type": "object"}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), {"type": "auto"}),
        (ToolChoice(ToolChoiceMode.REQUIRED), {"type": "any"}),
        (ToolChoice(ToolChoiceMode.NONE), {"type": "none"}),
        (ToolChoice(tool_name="get_weather"), {"type": "tool", "name": "get_weather"}),
    ],
)
def test_build_tool_choice(choice: ToolChoice, expected: dict[str, str]) -> None:
    assert adapter().build(chat(tool_choice=choice)).json["tool_choice"] == expected


@pytest.mark.parametrize(
    ("generation", "settings", "expected"),
    [
        (GenerationParams(), {}, {"max_tokens": 4096}),
        (GenerationParams(), {"default_max_tokens": 1000}, {"max_tokens": 1000}),
        (GenerationParams(max_tokens=50), {"default_max_tokens": 1000}, {"max_tokens": 50}),
        (
            GenerationParams(reasoning_budget_tokens=2048),
            {},
            # The default leaves room for the answer on top of the thinking budget.
            {"max_tokens": 4096 + 2048, "thinking": {"type": "enabled", "budget_tokens": 2048}},
        ),
        (
            GenerationParams(max_tokens=3000, reasoning_budget_tokens=2048),
            {},
            {"max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 2048}},
        ),
        (
            GenerationParams(reasoning_budget_tokens=0),
            {},
            {"max_tokens": 4096, "thinking": {"type": "disabled"}},
        ),
        (
            GenerationParams(
                temperature=0.0,
                top_p=0.9,
                top_k=40,
                stop=("END",),
                # Not Anthropic parameters: dropped.
                presence_penalty=0.5,
                frequency_penalty=0.5,
                seed=7,
            ),
            {},
            {
                "max_tokens": 4096,
                "temperature": 0.0,
                "top_p": 0.9,
                "top_k": 40,
                "stop_sequences": ["END"],
            },
        ),
    ],
)
def test_build_generation_params(
    generation: GenerationParams, settings: dict[str, Any], expected: dict[str, Any]
) -> None:
    body = dict(adapter(**settings).build(chat(generation=generation)).json)
    for key in ("model", "stream", "messages"):
        del body[key]
    assert body == expected


def test_build_completion_as_a_one_turn_chat() -> None:
    """Anthropic retired its text completions API: the prompt is the user's message."""
    body = adapter().build(CompletionRequest("claude", "Hi", GenerationParams(max_tokens=5))).json
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert (body["max_tokens"], body["stream"]) == (5, True)
    assert "system" not in body


def test_build_refuses_fill_in_the_middle_and_embeddings() -> None:
    with pytest.raises(GatewayError, match="fill-in-the-middle"):
        adapter().build(CompletionRequest("claude", "def f(", suffix="return 1"))
    with pytest.raises(TypeError, match="llm/v1/embeddings"):
        adapter().build(EmbeddingRequest("claude", ("Hi",)))


# --- stream decoding: recordings -----------------------------------------------


def decode(chunks: list[bytes]) -> tuple[list[Event], GatewayError | None]:
    """The events of a body fed in `chunks`, and the error it ended with."""
    decoder = AnthropicStreamDecoder()
    events: list[Event] = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
        events += decoder.close()
    except GatewayError as exc:
        return events, exc
    return events, None


THINKING = [
    "The user is asking for",
    " weather information for Florence, Italy. I",
    " have",
    " access",
    " to a",
    " weather",
    " function",
    " that takes",
    " a location parameter. The",
    " user",
    " has",
    ' provided the location as "Florence, Italy',
    '" which',
    " is specific",
    " enough for",
    " the",
    " weather function.",
    " I have",
    " all the required parameters to",
    " make the",
    " function call.",
]

RECORDED: list[tuple[str, list[Event], tuple[Status, str, str, dict[str, str]] | None]] = [
    (
        "anthropic_messages_stream.txt",
        [
            Start(id="msg_01KTBB57LAzaSZs8kMNvfnsY", model=MODEL),
            *(ReasoningDelta(text) for text in THINKING),
            ReasoningSignature(RECORDED_SIGNATURE),
            ToolCallDelta(0, id="toolu_01Js4AMfx5qpTLhwTusnvT68", name="weather"),
            *(
                ToolCallDelta(0, arguments=fragment)
                for fragment in ['{"', "lo", "catio", 'n": "Florenc', "e, Italy", '"}']
            ),
            Usage(input_tokens=424, output_tokens=119),
            Finish(FinishReason.TOOL_CALLS, "tool_use"),
        ],
        None,
    ),
    (
        "anthropic_messages_tool_use_stream.txt",
        [
            Start(id="msg_019Q1hrJbZG26Fb9BQhrkHEr", model=MODEL),
            TextDelta("I"),
            TextDelta("'ll check the current weather in Paris for you."),
            ToolCallDelta(0, id="toolu_01NRLabsLyVHZPKxbKvkfSMn", name="get_weather"),
            *(
                ToolCallDelta(0, arguments=fragment)
                for fragment in ['{"locati', 'on": "P', "ar", 'is"}']
            ),
            Usage(input_tokens=377, output_tokens=65),
            Finish(FinishReason.TOOL_CALLS, "tool_use"),
        ],
        None,
    ),
    (
        "anthropic_error_midstream.txt",
        [
            Start(id="msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK", model="claude-3-opus-latest"),
            TextDelta("Hello"),
        ],
        (
            Status.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
            "anthropic: Overloaded",
            {"provider": "anthropic", "http_status": "529", "upstream_type": "overloaded_error"},
        ),
    ),
]


@pytest.mark.parametrize(("name", "expected", "error"), RECORDED, ids=[c[0] for c in RECORDED])
def test_recording_decodes_the_same_at_every_split(
    name: str, expected: list[Event], error: tuple[Status, str, str, dict[str, str]] | None
) -> None:
    for chunks in splits(recording(name)):
        events, raised = decode(chunks)
        assert events == expected, chunks
        assert (error_fields(raised) if raised else None) == error, chunks


@pytest.mark.parametrize(
    ("name", "reasoning", "text", "tool_call"),
    [
        (
            "anthropic_messages_stream.txt",
            "The user is asking for weather information for Florence, Italy. I have access to a "
            "weather function that takes a location parameter. The user has provided the location "
            'as "Florence, Italy" which is specific enough for the weather function. I have all '
            "the required parameters to make the function call.",
            "",
            ("toolu_01Js4AMfx5qpTLhwTusnvT68", "weather", {"location": "Florence, Italy"}),
        ),
        (
            "anthropic_messages_tool_use_stream.txt",
            "",
            "I'll check the current weather in Paris for you.",
            ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Paris"}),
        ),
    ],
)
def test_recording_adds_up(
    name: str, reasoning: str, text: str, tool_call: tuple[str, str, dict[str, str]]
) -> None:
    events, _ = decode([recording(name)])
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == reasoning
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == text
    assert {e.index for e in calls} == {0}
    assert (calls[0].id, calls[0].name, json.loads("".join(e.arguments for e in calls))) == (
        tool_call
    )


# --- stream decoding: synthetic streams ----------------------------------------


def sse(*payloads: dict[str, Any]) -> bytes:
    return b"".join(f"event: {p['type']}\ndata: {json.dumps(p)}\n\n".encode() for p in payloads)


def message_start(**usage: int) -> dict[str, Any]:
    message = {"id": "msg_1", "model": MODEL, "usage": usage or {"input_tokens": 1}}
    return {"type": "message_start", "message": message}


def block_start(index: int, **block: Any) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, **delta: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str | None = "end_turn", **usage: int) -> dict[str, Any]:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return {"type": "message_delta", "delta": delta, "usage": usage or {"output_tokens": 1}}


MESSAGE_STOP = {"type": "message_stop"}
TOOL_USE = recording("anthropic_messages_tool_use_stream.txt")


def decode_all(body: bytes) -> list[Event]:
    decoder = AnthropicStreamDecoder()
    return decoder.feed(body) + decoder.close()


def test_blocks_of_every_kind() -> None:
    body = sse(
        message_start(),
        block_start(0, type="thinking", thinking="Hmm", signature=""),
        block_delta(0, type="thinking_delta", thinking=", sunny?"),
        block_delta(0, type="signature_delta", signature="c2ln"),
        block_stop(0),
        block_start(1, type="redacted_thinking", data="opaque"),
        block_stop(1),
        block_start(2, type="text", text="Hello"),
        block_delta(2, type="citations_delta", citation={"type": "char_location"}),
        block_delta(2, type="text_delta", text=" world"),
        block_delta(2, type="text_delta", text=""),
        block_stop(2),
        # A server tool streams its input too, but the gateway's caller does not run it.
        block_start(3, type="server_tool_use", id="srvtoolu_1", name="web_search", input={}),
        block_delta(3, type="input_json_delta", partial_json='{"query": "x"}'),
        block_stop(3),
        block_start(4, type="tool_use", id="toolu_a", name="a", input={}),
        block_delta(4, type="input_json_delta", partial_json='{"x": 1}'),
        block_stop(4),
        {"type": "ping"},
        {"type": "a_future_event", "index": 9},
        block_start(5, type="tool_use", id="toolu_b", name="b", input={}),
        block_delta(5, type="input_json_delta", partial_json=""),
        block_stop(5),
        # A proxy may send the whole input at the start.
        block_start(6, type="tool_use", id="toolu_c", name="c", input={"y": 2}),
        block_stop(6),
        message_delta("tool_use", output_tokens=30),
        MESSAGE_STOP,
    )
    assert decode_all(body) == [
        Start("msg_1", MODEL),
        ReasoningDelta("Hmm"),
        ReasoningDelta(", sunny?"),
        ReasoningSignature("c2ln"),
        RedactedReasoning("opaque"),
        TextDelta("Hello"),
        TextDelta(" world"),
        ToolCallDelta(0, "toolu_a", "a"),
        ToolCallDelta(0, arguments='{"x": 1}'),
        ToolCallDelta(1, "toolu_b", "b"),
        # Arguments always add up to a JSON object, also for a call without any.
        ToolCallDelta(1, arguments="{}"),
        ToolCallDelta(2, "toolu_c", "c", '{"y": 2}'),
        Usage(input_tokens=1, output_tokens=30),
        Finish(FinishReason.TOOL_CALLS, "tool_use"),
    ]


def test_usage_counts_cache_as_input_and_takes_the_latest_report() -> None:
    body = sse(
        message_start(
            input_tokens=10,
            cache_creation_input_tokens=5,
            cache_read_input_tokens=100,
            output_tokens=1,
        ),
        message_delta(output_tokens=20),
        # Newer API versions repeat (and may revise) input counts here.
        message_delta(input_tokens=12, cache_read_input_tokens=200, output_tokens=42),
        MESSAGE_STOP,
    )
    assert decode_all(body)[-2:] == [
        Usage(
            input_tokens=12 + 5 + 200,
            output_tokens=42,
            cached_input_tokens=200,
            cache_write_input_tokens=5,
        ),
        Finish(FinishReason.STOP, "end_turn"),
    ]


@pytest.mark.parametrize(
    ("stop_reason", "reason"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("model_context_window_exceeded", FinishReason.LENGTH),
        ("tool_use", FinishReason.TOOL_CALLS),
        ("refusal", FinishReason.CONTENT_FILTER),
        ("pause_turn", FinishReason.OTHER),
        (None, FinishReason.OTHER),
    ],
)
def test_stop_reasons(stop_reason: str | None, reason: FinishReason) -> None:
    events = decode_all(sse(message_start(), message_delta(stop_reason), MESSAGE_STOP))
    assert events[-1] == Finish(reason, stop_reason or "")


@pytest.mark.parametrize(
    ("error_type", "http_status", "status"),
    [
        ("invalid_request_error", 400, Status.INVALID_ARGUMENT),
        ("authentication_error", 401, Status.INTERNAL),
        ("permission_error", 403, Status.INTERNAL),
        ("not_found_error", 404, Status.FAILED_PRECONDITION),
        ("request_too_large", 413, Status.INVALID_ARGUMENT),
        ("rate_limit_error", 429, Status.RESOURCE_EXHAUSTED),
        ("api_error", 500, Status.UNAVAILABLE),
        ("timeout_error", 504, Status.DEADLINE_EXCEEDED),
        ("overloaded_error", 529, Status.UNAVAILABLE),
        ("brand_new_error", 500, Status.UNAVAILABLE),
    ],
)
def test_error_event_maps_like_its_http_status(
    error_type: str, http_status: int, status: Status
) -> None:
    error = {"type": "error", "error": {"type": error_type, "message": "boom"}}
    decoder = AnthropicStreamDecoder()
    # An error before any other event of its chunk is raised at once.
    with pytest.raises(GatewayError) as caught:
        decoder.feed(sse(error))
    assert caught.value.status is status
    assert caught.value.metadata["http_status"] == str(http_status)
    assert caught.value.metadata["upstream_type"] == error_type


def test_error_after_events_of_its_chunk_is_raised_next() -> None:
    error = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    decoder = AnthropicStreamDecoder()
    assert decoder.feed(sse(message_start(), error)) == [Start("msg_1", MODEL)]
    with pytest.raises(GatewayError, match="boom"):
        decoder.feed(b"")
    with pytest.raises(GatewayError, match="boom"):
        decoder.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (TOOL_USE[: TOOL_USE.index(b"event: message_stop")], "ended before message_stop"),
        (b"", "ended before message_stop"),
        (b"event: message_start\ndata: {not json\n\n", "unreadable message_start event"),
        (sse({"type": "content_block_delta", "index": 0}), "unreadable content_block_delta"),
        (b"data: [1, 2]\n\n", "unreadable message event"),
    ],
    ids=["truncated", "empty", "bad-json", "missing-key", "not-an-object"],
)
def test_protocol_errors(body: bytes, message: str) -> None:
    _, raised = decode([body])
    assert raised is not None
    assert raised.status is Status.UNAVAILABLE
    assert raised.reason == "UPSTREAM_PROTOCOL_ERROR"
    assert message in raised.message


# --- HTTP errors ---------------------------------------------------------------


def anthropic_error(error_type: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "retry_after"),
    [
        (
            400,
            {},
            recording("anthropic_error_response.json"),
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "anthropic: messages.2.content.0: unexpected `tool_use_id` found in "
                "`tool_result` blocks: srvtoolu_issue_17366_invalid. Each `tool_result` block "
                "must have a corresponding `tool_use` block in the previous message.",
                {
                    "provider": "anthropic",
                    "http_status": "400",
                    "upstream_type": "invalid_request_error",
                    "upstream_request_id": "req_011Cd65WVh8Zrvno3NunpJ73",
                },
            ),
            None,
        ),
        (
            429,
            {"retry-after": "7", "request-id": "req_429"},
            anthropic_error(
                "rate_limit_error", "Number of request tokens has exceeded your limit."
            ),
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "anthropic: Number of request tokens has exceeded your limit.",
                {
                    "provider": "anthropic",
                    "http_status": "429",
                    "upstream_type": "rate_limit_error",
                    "upstream_request_id": "req_429",
                },
            ),
            7.0,
        ),
        (
            401,
            {},
            anthropic_error("authentication_error", "invalid x-api-key sk-ant-abc"),
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "anthropic rejected the gateway's credentials (HTTP 401)",
                {
                    "provider": "anthropic",
                    "http_status": "401",
                    "upstream_type": "authentication_error",
                },
            ),
            None,
        ),
        (
            529,
            {},
            anthropic_error("overloaded_error", "Overloaded"),
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "anthropic: Overloaded",
                {
                    "provider": "anthropic",
                    "http_status": "529",
                    "upstream_type": "overloaded_error",
                },
            ),
            None,
        ),
        (
            502,
            {},
            b"<html>" + b"x" * 1000,
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "anthropic: <html>" + "x" * 494,
                {"provider": "anthropic", "http_status": "502"},
            ),
            None,
        ),
        (
            503,
            {},
            b"",
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "anthropic: HTTP 503 with an empty body",
                {"provider": "anthropic", "http_status": "503"},
            ),
            None,
        ),
    ],
    ids=["400-recorded", "429-retry-after", "401", "529", "non-json", "empty"],
)
def test_parse_error(
    status: int,
    headers: dict[str, str],
    body: bytes,
    expected: tuple[Status, str, str, dict[str, str]],
    retry_after: float | None,
) -> None:
    error = adapter().parse_error(status, headers, body)
    assert error_fields(error) == expected
    assert error.retry_after == retry_after
