"""Cohere adapter: request building, stream decoding on recorded bytes split at
every boundary (and at random ones), malformed streams, and error mapping.
No network: the two tests of the whole HTTP path run on a mock transport."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    ImagePart,
    Message,
    ReasoningDelta,
    Request,
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
from sluice.providers.base import StreamDecoder
from sluice.providers.bounds import DEFAULT_MAX_EVENT_BYTES
from sluice.providers.cohere import (
    CohereAdapter,
    CohereChatDecoder,
    CohereEmbeddingDecoder,
    CohereSettings,
)
from sluice.providers.http import HttpClientPool
from tests.decoding import chunked, decode, network_chunks
from tests.recordings import recording, splits
from tests.upstream import FakeUpstream, Reply, SeenRequest

MODEL = "command-a-03-2025"
CHAT_URL = "https://api.cohere.com/v2/chat"
EMBED_URL = "https://api.cohere.com/v2/embed"

ErrorFields = tuple[Status, str, str, dict[str, str]]


def cohere_settings(**fields: Any) -> CohereSettings:
    return CohereSettings.model_validate({"provider": "cohere", "name": MODEL, **fields})


def adapter(**fields: Any) -> CohereAdapter:
    # build, decoder and parse_error never touch the client.
    return CohereAdapter(cohere_settings(**fields), client=None)  # type: ignore[arg-type]


def chat(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest("command", messages or (user("Hi"),), **fields)


def user(text: str) -> Message:
    return Message(Role.USER, (TextPart(text),))


def error_fields(error: GatewayError) -> ErrorFields:
    return error.status, error.reason, error.message, error.metadata


def decode_chat(chunks: list[bytes]) -> tuple[list[Event], GatewayError | None]:
    return decode(CohereChatDecoder(MODEL), chunks)


def decode_all(body: bytes) -> list[Event]:
    events, error = decode_chat([body])
    assert error is None, error
    return events


def run_stream(
    chunks: list[bytes], request: Request | None = None, *, status: int = 200
) -> tuple[list[Event], GatewayError | None, list[SeenRequest]]:
    """The whole HTTP path (`HttpAdapter.stream`) against a loopback upstream
    answering `chunks`: the events, the error it ended with, and the requests
    sent."""

    async def run() -> tuple[list[Event], GatewayError | None, list[SeenRequest]]:
        events: list[Event] = []
        pool = HttpClientPool()
        async with FakeUpstream(Reply(status, chunks)) as upstream:
            settings = cohere_settings().model_copy(update={"api_base": upstream.base_url})
            try:
                async for event in settings.create_adapter(pool).stream(request or chat()):
                    events.append(event)
            except GatewayError as exc:
                return events, exc, upstream.requests
            finally:
                await pool.aclose()
        return events, None, upstream.requests

    return asyncio.run(run())


# --- settings ------------------------------------------------------------------


def test_settings_accept_prefixed_key_and_base() -> None:
    built = adapter(
        cohere_api_key="co-test", cohere_api_base="https://proxy.example/cohere/"
    ).build(chat())
    assert built.url == "https://proxy.example/cohere/v2/chat"
    assert built.headers["authorization"] == "Bearer co-test"


@pytest.mark.parametrize(
    "fields", [{"input_type": "image"}, {"api_version": "v1"}], ids=["bad-input-type", "unknown"]
)
def test_settings_reject_bad_fields(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=next(iter(fields))):
        cohere_settings(**fields)


async def test_create_adapter_uses_the_pooled_client() -> None:
    pool = HttpClientPool()
    try:
        created = cohere_settings().create_adapter(pool)
        assert isinstance(created, CohereAdapter)
        assert created._client is pool.client_for("https://api.cohere.com/")
    finally:
        await pool.aclose()


# --- build: chat ---------------------------------------------------------------


def test_build_minimal_chat() -> None:
    built = adapter(api_key="co-test").build(chat(user("Hi")))
    assert built.method == "POST"
    assert built.url == CHAT_URL
    assert built.headers == {
        "authorization": "Bearer co-test",
        "content-type": "application/json",
        "x-client-name": "sluice",
    }
    assert built.json == {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi"}],
    }


def test_build_without_key_or_client_name_sends_neither() -> None:
    assert adapter(client_name="").build(chat()).headers == {"content-type": "application/json"}


def test_build_tool_round_trip() -> None:
    request = chat(
        Message(Role.SYSTEM, (TextPart("Be brief."),)),
        user("Weather in Paris and Rome?"),
        Message(
            Role.ASSISTANT,
            (
                TextPart("I will look both up."),
                ToolCallPart("get_weather_1", "get_weather", '{"city": "Paris"}'),
                ToolCallPart("get_weather_2", "get_weather", '{"city": "Rome"}'),
                ToolCallPart("now_3", "now", ""),
            ),
        ),
        Message(Role.TOOL, (ToolResultPart("get_weather_1", "18C"),)),
        # Anthropic-style clients send several results in one user turn.
        Message(
            Role.USER,
            (
                ToolResultPart("get_weather_2", "no data", is_error=True),
                ToolResultPart("now_3", "12:00"),
            ),
        ),
        Message(Role.ASSISTANT, (TextPart("Paris: 18C."),)),
        user("Thanks"),
    )
    assert adapter().build(request).json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "get_weather_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "get_weather_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
                {"id": "now_3", "type": "function", "function": {"name": "now", "arguments": "{}"}},
            ],
            "tool_plan": "I will look both up.",
        },
        {"role": "tool", "tool_call_id": "get_weather_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "get_weather_2", "content": "no data"},
        {"role": "tool", "tool_call_id": "now_3", "content": "12:00"},
        {"role": "assistant", "content": "Paris: 18C."},
        {"role": "user", "content": "Thanks"},
    ]


def test_build_tool_calls_without_text_have_no_tool_plan() -> None:
    message = Message(Role.ASSISTANT, (TextPart(""), ToolCallPart("c1", "now", "{}")))
    assert adapter().build(chat(user("Time?"), message)).json["messages"][1] == {
        "role": "assistant",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}
        ],
    }


def test_build_images_inline_and_by_url() -> None:
    message = Message(
        Role.USER,
        (
            TextPart("What are "),
            ImagePart(data=b"\x89PNG", media_type="image/png"),
            ImagePart(url="https://example.com/cat.jpg"),
            TextPart("these?"),
        ),
    )
    assert adapter().build(chat(message)).json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What are these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_build_image_only_user_turn() -> None:
    message = Message(Role.USER, (ImagePart(url="https://example.com/cat.jpg"),))
    assert adapter().build(chat(message)).json["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    ]


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (
            Message(Role.USER, (TextPart("Look"), ImagePart(data=b"\x89PNG"))),
            "needs its media type",
        ),
        (
            Message(Role.ASSISTANT, (TextPart("Here"), ImagePart(url="https://e.com/a.png"))),
            "user turns only",
        ),
        (
            Message(Role.SYSTEM, (TextPart("Style"), ImagePart(url="https://e.com/a.png"))),
            "user turns only",
        ),
    ],
    ids=["no-media-type", "assistant", "system"],
)
def test_build_refuses_images(message: Message, problem: str) -> None:
    with pytest.raises(GatewayError, match=problem) as caught:
        adapter().build(chat(user("Hi"), message))
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "messages[1].parts[1].image"


WEATHER = Tool("get_weather", "Weather of a city", {"type": "object", "properties": {}})
NOW = Tool("now", "", {})
WEATHER_SPEC = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {}},
    },
}
NOW_SPEC = {"type": "function", "function": {"name": "now"}}


def test_build_tools() -> None:
    assert adapter().build(chat(tools=(WEATHER, NOW))).json["tools"] == [WEATHER_SPEC, NOW_SPEC]


@pytest.mark.parametrize(
    ("choice", "tool_choice", "tools"),
    [
        (None, None, [WEATHER_SPEC, NOW_SPEC]),
        # Auto is Cohere's default: nothing to send.
        (ToolChoice(ToolChoiceMode.AUTO), None, [WEATHER_SPEC, NOW_SPEC]),
        (ToolChoice(ToolChoiceMode.REQUIRED), "REQUIRED", [WEATHER_SPEC, NOW_SPEC]),
        (ToolChoice(ToolChoiceMode.NONE), "NONE", [WEATHER_SPEC, NOW_SPEC]),
        # Cohere cannot name a tool: the named one is offered alone, and required.
        (ToolChoice(tool_name="now"), "REQUIRED", [NOW_SPEC]),
    ],
    ids=["unset", "auto", "required", "none", "named"],
)
def test_build_tool_choice(
    choice: ToolChoice | None, tool_choice: str | None, tools: list[dict[str, Any]]
) -> None:
    body = adapter().build(chat(tools=(WEATHER, NOW), tool_choice=choice)).json
    assert body.get("tool_choice") == tool_choice
    assert body["tools"] == tools


def test_build_refuses_a_named_tool_choice_not_in_tools() -> None:
    with pytest.raises(GatewayError, match="'lookup', which is not in tools") as caught:
        adapter().build(chat(tools=(WEATHER,), tool_choice=ToolChoice(tool_name="lookup")))
    assert (caught.value.status, caught.value.field) == (Status.INVALID_ARGUMENT, "tool_choice")


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        (GenerationParams(), {}),
        (
            GenerationParams(
                max_tokens=100,
                temperature=0.0,
                top_p=0.9,
                top_k=40,
                stop=("END", "STOP"),
                presence_penalty=0.5,
                frequency_penalty=0.25,
                seed=7,
            ),
            {
                "max_tokens": 100,
                "temperature": 0.0,
                "p": 0.9,
                "k": 40,
                "stop_sequences": ["END", "STOP"],
                "presence_penalty": 0.5,
                "frequency_penalty": 0.25,
                "seed": 7,
            },
        ),
        (
            GenerationParams(reasoning_budget_tokens=2048),
            {"thinking": {"type": "enabled", "token_budget": 2048}},
        ),
        (GenerationParams(reasoning_budget_tokens=0), {"thinking": {"type": "disabled"}}),
    ],
    ids=["none-set", "all-sampling", "thinking", "thinking-off"],
)
def test_build_generation_params(generation: GenerationParams, expected: dict[str, Any]) -> None:
    body = dict(adapter().build(chat(generation=generation)).json)
    for key in ("model", "stream", "messages"):
        del body[key]
    assert body == expected


# --- build: completions and embeddings ----------------------------------------


def test_build_completion_as_one_user_turn() -> None:
    request = CompletionRequest("command", "Once upon a time", GenerationParams(max_tokens=5))
    built = adapter().build(request)
    assert built.url == CHAT_URL
    assert built.json == {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "Once upon a time"}],
        "max_tokens": 5,
    }


def test_build_refuses_fill_in_the_middle() -> None:
    with pytest.raises(GatewayError, match="fill-in-the-middle") as caught:
        adapter().build(CompletionRequest("command", "def f(", suffix="    return x"))
    assert (caught.value.status, caught.value.field) == (Status.INVALID_ARGUMENT, "suffix")


@pytest.mark.parametrize(
    ("fields", "dimensions", "expected"),
    [
        ({}, None, {"input_type": "search_document"}),
        (
            {"input_type": "search_query"},
            512,
            {"input_type": "search_query", "output_dimension": 512},
        ),
    ],
    ids=["defaults", "query-with-dimensions"],
)
def test_build_embedding(
    fields: dict[str, str], dimensions: int | None, expected: dict[str, Any]
) -> None:
    built = adapter(api_key="co-test", **fields).build(
        EmbeddingRequest("embed", ("sunny day", "rainy day"), dimensions=dimensions)
    )
    assert built.url == EMBED_URL
    assert built.headers["authorization"] == "Bearer co-test"
    assert built.json == {
        "model": MODEL,
        "texts": ["sunny day", "rainy day"],
        "embedding_types": ["float"],
        **expected,
    }


@pytest.mark.parametrize(
    ("request_", "decoder_type"),
    [
        (chat(), CohereChatDecoder),
        (CompletionRequest("command", "Hi"), CohereChatDecoder),
        (EmbeddingRequest("embed", ("x",)), CohereEmbeddingDecoder),
    ],
    ids=["chat", "completion", "embedding"],
)
def test_decoder_per_operation(request_: Request, decoder_type: type[StreamDecoder]) -> None:
    assert isinstance(adapter().decoder(request_), decoder_type)


# --- stream decoding: recordings -----------------------------------------------

TOOL_PLAN = [
    "I",
    " will",
    " use",
    " the",
    " weather",
    " tool",
    " to",
    " find",
    " the",
    " weather",
    " in",
    " San",
    " Francisco",
    " and",
    " the",
    " city",
    "At",
    "tract",
    "ions",
    " tool",
    " to",
    " find",
    " attractions",
    " in",
    " San",
    " Francisco",
    ".",
]
ARGUMENT_FRAGMENTS = {
    0: ['{"', "location", '":', ' "', "San", " Francisco", '"}'],
    1: ['{"', "city", '":', ' "', "San", " Francisco", '"}'],
}

RECORDED: list[tuple[str, list[Event]]] = [
    (
        "cohere_v2_chat_stream.txt",
        [
            Start(id="321d178c-2c12-44d3-ae42-2f5510f6b1cc", model=MODEL),
            *(TextDelta(t) for t in ["The", " capital", " of", " France", " is", " Paris", "."]),
            # tokens, not billed_units (12 in, 7 out); cached_tokens is part of the input.
            Usage(input_tokens=507, output_tokens=10, cached_input_tokens=448),
            Finish(FinishReason.STOP, "COMPLETE"),
        ],
    ),
    (
        "cohere_v2_chat_tool_stream.txt",
        [
            Start(id="2941521a-b87a-45f6-9b0d-235fd66c3025", model=MODEL),
            *(ReasoningDelta(text) for text in TOOL_PLAN),
            ToolCallDelta(0, id="weather_e8p4pn45zt0t", name="weather"),
            *(ToolCallDelta(0, arguments=fragment) for fragment in ARGUMENT_FRAGMENTS[0]),
            ToolCallDelta(1, id="cityAttractions_pyxssbwnq9fq", name="cityAttractions"),
            *(ToolCallDelta(1, arguments=fragment) for fragment in ARGUMENT_FRAGMENTS[1]),
            Usage(input_tokens=1549, output_tokens=95, cached_input_tokens=1504),
            Finish(FinishReason.TOOL_CALLS, "TOOL_CALL"),
        ],
    ),
]
RECORDINGS = [recording(name) for name, _ in RECORDED]


@pytest.mark.parametrize(("name", "expected"), RECORDED, ids=[name for name, _ in RECORDED])
def test_recording_decodes_the_same_at_every_split(name: str, expected: list[Event]) -> None:
    for chunks in splits(recording(name)):
        assert decode_chat(chunks) == (expected, None), chunks


def test_tool_recording_adds_up() -> None:
    events = decode_all(recording("cohere_v2_chat_tool_stream.txt"))
    plan = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert plan == (
        "I will use the weather tool to find the weather in San Francisco and the "
        "cityAttractions tool to find attractions in San Francisco."
    )
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    arguments = {
        index: json.loads("".join(e.arguments for e in calls if e.index == index))
        for index in (0, 1)
    }
    assert arguments == {0: {"location": "San Francisco"}, 1: {"city": "San Francisco"}}


def test_recording_through_the_http_path() -> None:
    events, error, sent = run_stream([RECORDINGS[0]])
    assert (events, error) == (RECORDED[0][1], None)
    assert [(r.method, r.path) for r in sent] == [("POST", urlsplit(CHAT_URL).path)]
    assert sent[0].json()["stream"] is True


# --- stream decoding: properties -----------------------------------------------


@settings(max_examples=150, deadline=None)
@given(which=st.sampled_from([0, 1]), cuts=st.lists(st.integers(0, 8_000), max_size=40))
def test_any_chunking_decodes_like_the_whole(which: int, cuts: list[int]) -> None:
    assert decode_chat(chunked(RECORDINGS[which], cuts)) == (RECORDED[which][1], None)


def assert_protocol_error(error: GatewayError | None) -> None:
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")


@settings(max_examples=150, deadline=None)
@given(garbage=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_garbage_ends_in_a_protocol_error(garbage: bytes, cuts: list[int]) -> None:
    # decode() lets only GatewayError through: any other exception fails here.
    _, error = decode_chat(chunked(garbage, cuts))
    assert_protocol_error(error)


def _message_end_json_end(body: bytes) -> int:
    """Where the JSON of the message-end event ends (its last byte is `}`)."""
    start = body.index(b'"type":"message-end"')
    return body.index(b"\n", start)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), which=st.sampled_from([0, 1]))
def test_truncated_body_is_a_protocol_error(data: st.DataObject, which: int) -> None:
    body = RECORDINGS[which]
    cut = data.draw(st.integers(0, _message_end_json_end(body) - 1), label="cut")
    events, error = decode_chat([body[:cut]])
    assert_protocol_error(error)
    assert not any(isinstance(e, Finish) for e in events)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), which=st.sampled_from([0, 1]))
def test_corrupted_json_frame_is_a_protocol_error(data: st.DataObject, which: int) -> None:
    lines = RECORDINGS[which].split(b"\n")
    frames = [i for i, line in enumerate(lines) if line.startswith(b"data: {")]
    line = data.draw(st.sampled_from(frames), label="line")
    # Any proper prefix of a JSON object is not JSON.
    keep = data.draw(st.integers(len(b"data: "), len(lines[line]) - 1), label="keep")
    lines[line] = lines[line][:keep]
    _, error = decode_chat([b"\n".join(lines)])
    assert_protocol_error(error)


def test_oversize_event_is_refused() -> None:
    _, error = decode_chat(network_chunks(b"data: " + b"x" * DEFAULT_MAX_EVENT_BYTES))
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_EVENT_TOO_LARGE")
    assert "max_event_bytes" in error.message


# --- stream decoding: synthetic streams ----------------------------------------


def sse(*payloads: dict[str, Any]) -> bytes:
    return b"".join(f"event: {p['type']}\ndata: {json.dumps(p)}\n\n".encode() for p in payloads)


MESSAGE_START = {
    "id": "msg-1",
    "type": "message-start",
    "delta": {"message": {"role": "assistant"}},
}


def content(kind: str, index: int, **fields: str) -> dict[str, Any]:
    return {"type": kind, "index": index, "delta": {"message": {"content": fields}}}


def tool_call_start(
    index: int, call_id: str | None, name: str, arguments: str = ""
) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
    return {"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": call}}}


def tool_call_delta(index: int, arguments: str) -> dict[str, Any]:
    tool_calls = {"function": {"arguments": arguments}}
    return {
        "type": "tool-call-delta",
        "index": index,
        "delta": {"message": {"tool_calls": tool_calls}},
    }


def tool_call_end(index: int) -> dict[str, Any]:
    return {"type": "tool-call-end", "index": index}


def message_end(finish_reason: str | None = "COMPLETE", **delta: Any) -> dict[str, Any]:
    delta.setdefault("usage", {"tokens": {"input_tokens": 3, "output_tokens": 2}})
    return {"type": "message-end", "delta": {"finish_reason": finish_reason, **delta}}


def test_thinking_text_and_ignored_events() -> None:
    body = sse(
        MESSAGE_START,
        content("content-start", 0, type="thinking", thinking=""),
        content("content-delta", 0, thinking="2 and 2"),
        content("content-delta", 0, thinking=" make 4."),
        {"type": "content-end", "index": 0},
        content("content-start", 1, type="text", text="The"),
        content("content-delta", 1, text=" answer"),
        content("content-delta", 1, text=""),
        {"type": "citation-start", "index": 0, "delta": {"message": {"citations": {}}}},
        {"type": "citation-end", "index": 0},
        {"type": "debug", "prompt": "..."},
        {"type": "a-future-event"},
        {"type": "content-end", "index": 1},
        message_end(),
    )
    assert decode_all(body) == [
        Start("msg-1", MODEL),
        ReasoningDelta("2 and 2"),
        ReasoningDelta(" make 4."),
        TextDelta("The"),
        TextDelta(" answer"),
        Usage(input_tokens=3, output_tokens=2),
        Finish(FinishReason.STOP, "COMPLETE"),
    ]


def test_tool_calls_without_arguments_or_id() -> None:
    body = sse(
        MESSAGE_START,
        # A parameterless tool streams no arguments at all: it gets "{}".
        tool_call_start(0, "currentTime_1", "currentTime"),
        tool_call_end(0),
        # Arguments may come whole at the start.
        tool_call_start(1, "get_weather_2", "get_weather", '{"city": "Paris"}'),
        tool_call_end(1),
        tool_call_start(2, None, "lookup"),
        tool_call_delta(2, ""),
        tool_call_delta(2, '{"q": 1}'),
        tool_call_end(2),
        # A forced call may finish as a plain completion.
        message_end("COMPLETE"),
    )
    assert decode_all(body) == [
        Start("msg-1", MODEL),
        ToolCallDelta(0, "currentTime_1", "currentTime"),
        ToolCallDelta(0, arguments="{}"),
        ToolCallDelta(1, "get_weather_2", "get_weather", '{"city": "Paris"}'),
        ToolCallDelta(2, "call_2", "lookup"),
        ToolCallDelta(2, arguments='{"q": 1}'),
        Usage(input_tokens=3, output_tokens=2),
        Finish(FinishReason.TOOL_CALLS, "COMPLETE"),
    ]


def test_tool_call_indexes_count_calls_not_cohere_indexes() -> None:
    body = sse(
        MESSAGE_START,
        tool_call_start(3, "a_1", "a", "{}"),
        tool_call_end(3),
        tool_call_start(7, "b_2", "b"),
        tool_call_delta(7, "{}"),
        tool_call_end(7),
        message_end("TOOL_CALL"),
    )
    assert decode_all(body)[1:4] == [
        ToolCallDelta(0, "a_1", "a", "{}"),
        ToolCallDelta(1, "b_2", "b"),
        ToolCallDelta(1, arguments="{}"),
    ]


@pytest.mark.parametrize(
    ("finish_reason", "reason"),
    [
        ("COMPLETE", FinishReason.STOP),
        ("STOP_SEQUENCE", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("TOOL_CALL", FinishReason.TOOL_CALLS),
        ("SOMETHING_NEW", FinishReason.OTHER),
        (None, FinishReason.OTHER),
    ],
)
def test_finish_reasons(finish_reason: str | None, reason: FinishReason) -> None:
    events = decode_all(sse(MESSAGE_START, message_end(finish_reason)))
    assert events[-1] == Finish(reason, finish_reason or "")


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {
                "billed_units": {"input_tokens": 12, "output_tokens": 7},
                "tokens": {"input_tokens": 507.0, "output_tokens": 10.0},
                "cached_tokens": 448,
            },
            Usage(input_tokens=507, output_tokens=10, cached_input_tokens=448),
        ),
        (
            {"billed_units": {"input_tokens": 12, "output_tokens": 7}},
            Usage(input_tokens=12, output_tokens=7),
        ),
        ({"tokens": {"output_tokens": 7}}, Usage(output_tokens=7, reported=False)),
        ({}, Usage(reported=False)),
        (None, Usage(reported=False)),
    ],
    ids=["tokens", "billed-units-only", "partial", "empty", "null"],
)
def test_usage(usage: dict[str, Any] | None, expected: Usage) -> None:
    events = decode_all(sse(MESSAGE_START, message_end(usage=usage)))
    assert events[-2] == expected


def test_stream_without_message_start_still_starts() -> None:
    assert decode_all(sse(content("content-delta", 0, text="Hi"), message_end())) == [
        Start("", MODEL),
        TextDelta("Hi"),
        Usage(input_tokens=3, output_tokens=2),
        Finish(FinishReason.STOP, "COMPLETE"),
    ]


def test_done_is_optional_and_events_after_message_end_are_ignored() -> None:
    body = sse(MESSAGE_START, message_end()) + sse(content("content-delta", 0, text="late"))
    assert decode_all(body) == decode_all(sse(MESSAGE_START, message_end()) + b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (
            {"finish_reason": "ERROR", "error": "internal failure"},
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "cohere: internal failure",
                {"provider": "cohere", "http_status": "500", "upstream_type": "ERROR"},
            ),
        ),
        (
            {"finish_reason": "ERROR"},
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "cohere: generation ended with ERROR",
                {"provider": "cohere", "http_status": "500", "upstream_type": "ERROR"},
            ),
        ),
        (
            {"finish_reason": "TIMEOUT", "error": "generation timed out"},
            (
                Status.DEADLINE_EXCEEDED,
                "UPSTREAM_HTTP_TIMEOUT",
                "cohere: generation timed out",
                {"provider": "cohere", "http_status": "504", "upstream_type": "TIMEOUT"},
            ),
        ),
    ],
    ids=["error", "error-without-message", "timeout"],
)
def test_failed_generation_raises(delta: dict[str, Any], expected: ErrorFields) -> None:
    failed = {"type": "message-end", "delta": delta}
    # Alone in its chunk the error is raised at once...
    decoder = CohereChatDecoder(MODEL)
    decoder.feed(sse(MESSAGE_START))
    with pytest.raises(GatewayError) as caught:
        decoder.feed(sse(failed))
    assert error_fields(caught.value) == expected
    # ...after other events of its chunk it waits until they are delivered.
    decoder = CohereChatDecoder(MODEL)
    assert decoder.feed(sse(MESSAGE_START, content("content-delta", 0, text="Hi"), failed)) == [
        Start("msg-1", MODEL),
        TextDelta("Hi"),
    ]
    assert decoder.failure is not None
    assert error_fields(decoder.failure) == expected
    with pytest.raises(GatewayError):
        decoder.close()


TEXT = recording("cohere_v2_chat_stream.txt")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (TEXT[: TEXT.index(b"event: message-end")], "ended before message-end"),
        (b"", "ended before message-end"),
        (b"data: [DONE]\n\n", "ended before message-end"),
        (b"event: message-start\ndata: {not json\n\n", "unreadable message-start event"),
        (b"data: [1, 2]\n\n", "unreadable message event"),
        (b'data: {"id": "x"}\n\n', "unreadable message event"),
        (sse({"type": "content-delta", "index": 0}), "unreadable content-delta event"),
        (sse(MESSAGE_START, tool_call_delta(0, "{}")), "unreadable tool-call-delta event"),
        (sse(MESSAGE_START, {"type": "message-end"}), "unreadable message-end event"),
    ],
    ids=[
        "truncated",
        "empty",
        "done-only",
        "bad-json",
        "not-an-object",
        "no-type",
        "missing-key",
        "unknown-tool-call",
        "message-end-without-delta",
    ],
)
def test_protocol_errors(body: bytes, message: str) -> None:
    _, error = decode_chat([body])
    assert_protocol_error(error)
    assert error is not None
    assert message in error.message


# --- embeddings ----------------------------------------------------------------

EMBED_RESPONSE = json.dumps(
    {
        "id": "f5aa3e7b-f011-4c5c-a825-f94669f760e5",
        "texts": ["sunny day at the beach", "rainy day in the city"],
        "embeddings": {"float": [[0.03302002, -0.0625], [-0.04660034, 0.00037765503]]},
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 10}},
        "response_type": "embeddings_by_type",
    }
).encode()


def test_embeddings_at_every_split() -> None:
    expected = [
        Start("f5aa3e7b-f011-4c5c-a825-f94669f760e5", MODEL),
        Embeddings(((0.03302002, -0.0625), (-0.04660034, 0.00037765503))),
        Usage(input_tokens=10),
        Finish(FinishReason.STOP),
    ]
    for chunks in splits(EMBED_RESPONSE):
        assert decode(CohereEmbeddingDecoder(MODEL), chunks) == (expected, None), chunks


@pytest.mark.parametrize(
    ("meta", "usage"),
    [
        (
            {"billed_units": {"input_tokens": 10}, "tokens": {"input_tokens": 12}},
            Usage(input_tokens=12),
        ),
        ({}, Usage(reported=False)),
    ],
    ids=["tokens-first", "none"],
)
def test_embedding_usage(meta: dict[str, Any], usage: Usage) -> None:
    body = json.dumps({"id": "e", "embeddings": {"float": [[1.0]]}, "meta": meta}).encode()
    events, _ = decode(CohereEmbeddingDecoder(MODEL), [body])
    assert events[2] == usage


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b"[]", b'{"embeddings": {"int8": [[1]]}}', EMBED_RESPONSE[:-1]],
    ids=["empty", "bad-json", "not-an-object", "no-float", "truncated"],
)
def test_embedding_protocol_errors(body: bytes) -> None:
    _, error = decode(CohereEmbeddingDecoder(MODEL), [body])
    assert_protocol_error(error)
    assert error is not None
    assert "unreadable embed response" in error.message


# --- HTTP errors ---------------------------------------------------------------


def cohere_error(message: str, **fields: str) -> bytes:
    return json.dumps({**fields, "message": message}).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "retry_after"),
    [
        (
            400,
            {"x-debug-trace-id": "trace-1"},
            recording("cohere_error_response.json"),
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "cohere: invalid request: model 'command-x' not found",
                {
                    "provider": "cohere",
                    "http_status": "400",
                    # The body's id wins over the trace header.
                    "upstream_request_id": "2c2f0a0e-6c8d-4b7e-9d0a-3c1a9c7f1e11",
                },
            ),
            None,
        ),
        (
            429,
            {"retry-after": "7", "x-debug-trace-id": "trace-2"},
            cohere_error("You are using a Trial key, which is limited to 10 API calls / minute."),
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "cohere: You are using a Trial key, which is limited to 10 API calls / minute.",
                {"provider": "cohere", "http_status": "429", "upstream_request_id": "trace-2"},
            ),
            7.0,
        ),
        (
            401,
            {},
            cohere_error("invalid api token co-abc"),
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "cohere rejected the gateway's credentials (HTTP 401)",
                {"provider": "cohere", "http_status": "401"},
            ),
            None,
        ),
        (
            498,
            {},
            cohere_error("invalid api token co-abc"),
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "cohere rejected the gateway's credentials (HTTP 401)",
                {"provider": "cohere", "http_status": "401"},
            ),
            None,
        ),
        (
            404,
            {},
            cohere_error("model 'command-x' not found, make sure the correct model ID was used"),
            (
                Status.FAILED_PRECONDITION,
                "UPSTREAM_NOT_FOUND",
                "cohere: model 'command-x' not found, make sure the correct model ID was used",
                {"provider": "cohere", "http_status": "404"},
            ),
            None,
        ),
        (
            503,
            {"retry-after": "2"},
            cohere_error("service unavailable", id="req-503"),
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "cohere: service unavailable",
                {"provider": "cohere", "http_status": "503", "upstream_request_id": "req-503"},
            ),
            2.0,
        ),
        (
            504,
            {},
            cohere_error("gateway timeout"),
            (
                Status.DEADLINE_EXCEEDED,
                "UPSTREAM_HTTP_TIMEOUT",
                "cohere: gateway timeout",
                {"provider": "cohere", "http_status": "504"},
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
                "cohere: <html>" + "x" * 494,
                {"provider": "cohere", "http_status": "502"},
            ),
            None,
        ),
        (
            500,
            {},
            b"",
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "cohere: HTTP 500 with an empty body",
                {"provider": "cohere", "http_status": "500"},
            ),
            None,
        ),
    ],
    ids=[
        "400-recorded",
        "429-retry-after",
        "401",
        "498-invalid-token",
        "404",
        "503",
        "504",
        "non-json",
        "empty",
    ],
)
def test_parse_error(
    status: int,
    headers: dict[str, str],
    body: bytes,
    expected: ErrorFields,
    retry_after: float | None,
) -> None:
    error = adapter().parse_error(status, headers, body)
    assert error_fields(error) == expected
    assert error.retry_after == retry_after


def test_http_error_through_the_http_path() -> None:
    events, error, _ = run_stream([cohere_error("too many tokens")], status=400)
    assert events == []
    assert error is not None
    assert (error.status, error.message) == (Status.INVALID_ARGUMENT, "cohere: too many tokens")
