"""Ollama native adapter: request bodies, recorded NDJSON streams decoded at
every split, stream properties, and error mapping. No server, no network."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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
from sluice.providers.http import HttpClientPool
from sluice.providers.ollama import (
    OllamaAdapter,
    OllamaChatDecoder,
    OllamaEmbeddingDecoder,
    OllamaGenerateDecoder,
    OllamaSettings,
)
from tests.decoding import chunked, decode, network_chunks
from tests.recordings import recording, splits

MODEL = "llama3.2"
BASE = "http://localhost:11434"

ErrorFields = tuple[Status, str, str, dict[str, str]]


def adapter(**fields: Any) -> OllamaAdapter:
    config = OllamaSettings.model_validate({"provider": "ollama", "name": MODEL, **fields})
    created = config.create_adapter(HttpClientPool())
    assert isinstance(created, OllamaAdapter)
    return created


def chat(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest("local", messages or (user("Hi"),), **fields)


def user(text: str) -> Message:
    return Message(Role.USER, (TextPart(text),))


def error_fields(error: GatewayError) -> ErrorFields:
    return error.status, error.reason, error.message, error.metadata


def texts(*fragments: str) -> list[Event]:
    return [TextDelta(fragment) for fragment in fragments]


def ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def chat_line(done: bool = False, **message: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "message": {"role": "assistant", "content": "", **message},
        "done": done,
    }


def done_line(reason: str | None = "stop", counts: dict[str, int] | None = None) -> dict[str, Any]:
    line = chat_line(done=True)
    if reason is not None:
        line["done_reason"] = reason
    return {**line, **(counts or {"prompt_eval_count": 3, "eval_count": 2})}


# --- settings ------------------------------------------------------------------


def test_settings_defaults_aliases_and_operations() -> None:
    built = adapter(
        ollama_api_key="proxy-token", ollama_api_base="https://ollama.example/root/"
    ).build(chat())
    assert built.url == "https://ollama.example/root/api/chat"
    assert built.headers["authorization"] == "Bearer proxy-token"
    assert adapter().build(chat()).url == f"{BASE}/api/chat"
    assert {op.value for op in OllamaSettings.operations} == {
        "llm/v1/chat",
        "llm/v1/completions",
        "llm/v1/embeddings",
    }


def test_settings_reject_unknown_keys() -> None:
    with pytest.raises(ValueError, match="keepalive"):
        OllamaSettings.model_validate({"provider": "ollama", "name": MODEL, "keepalive": "5m"})


# --- build ---------------------------------------------------------------------


def test_build_minimal_chat() -> None:
    built = adapter().build(chat(Message(Role.SYSTEM, (TextPart("Be brief."),)), user("Hi")))
    assert built.method == "POST"
    assert built.url == f"{BASE}/api/chat"
    # No key, no authorization header: a local Ollama has no auth.
    assert built.headers == {"content-type": "application/json"}
    assert built.json == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "stream": True,
    }


def test_build_tool_round_trip() -> None:
    request = chat(
        user("Weather in Paris and Rome?"),
        Message(
            Role.ASSISTANT,
            (
                TextPart("Let me look."),
                ToolCallPart("call_a", "get_weather", '{"city": "Paris"}'),
                ToolCallPart("call_b", "get_weather", '{"city": "Rome"}'),
                ToolCallPart("call_c", "get_time", ""),
            ),
        ),
        Message(Role.TOOL, (ToolResultPart("call_a", "18C"),)),
        Message(Role.TOOL, (ToolResultPart("call_b", "no data", is_error=True),)),
        # A result for a call not in the conversation keeps its id, has no name.
        Message(Role.USER, (ToolResultPart("call_x", "12:00"), TextPart("Thanks"))),
    )
    assert adapter().build(request).json["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    "id": "call_a",
                },
                {
                    "function": {"name": "get_weather", "arguments": {"city": "Rome"}},
                    "id": "call_b",
                },
                {"function": {"name": "get_time", "arguments": {}}, "id": "call_c"},
            ],
        },
        {"role": "tool", "content": "18C", "tool_call_id": "call_a", "tool_name": "get_weather"},
        {
            "role": "tool",
            "content": "no data",
            "tool_call_id": "call_b",
            "tool_name": "get_weather",
        },
        {"role": "tool", "content": "12:00", "tool_call_id": "call_x"},
        {"role": "user", "content": "Thanks"},
    ]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [("{not json", "not JSON"), ('["a"]', "must be a JSON object")],
)
def test_build_rejects_bad_tool_call_arguments(arguments: str, problem: str) -> None:
    request = chat(user("Hi"), Message(Role.ASSISTANT, (ToolCallPart("c", "f", arguments),)))
    with pytest.raises(GatewayError, match=problem) as caught:
        adapter().build(request)
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "messages[1].parts[0].tool_call.arguments"


def test_build_inline_images() -> None:
    message = Message(
        Role.USER,
        (
            TextPart("What are these?"),
            ImagePart(data=b"\x89PNG", media_type="image/png"),
            ImagePart(data=b"\xff\xd8\xff"),
        ),
    )
    assert adapter().build(chat(message)).json["messages"] == [
        {"role": "user", "content": "What are these?", "images": ["iVBORw==", "/9j/"]}
    ]


def test_build_refuses_image_urls() -> None:
    message = Message(Role.USER, (TextPart("What is it?"), ImagePart(url="https://x.test/a.png")))
    with pytest.raises(GatewayError, match="inline only") as caught:
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


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, [WEATHER_SPEC, NOW_SPEC]),
        (ToolChoice(ToolChoiceMode.AUTO), [WEATHER_SPEC, NOW_SPEC]),
        # Ollama cannot force a call: the tools are offered as for "auto".
        (ToolChoice(ToolChoiceMode.REQUIRED), [WEATHER_SPEC, NOW_SPEC]),
        (ToolChoice(ToolChoiceMode.NONE), None),
        (ToolChoice(tool_name="now"), [NOW_SPEC]),
    ],
    ids=["unset", "auto", "required", "none", "named"],
)
def test_build_tools_and_tool_choice(
    choice: ToolChoice | None, expected: list[dict[str, Any]] | None
) -> None:
    body = adapter().build(chat(tools=(WEATHER, NOW), tool_choice=choice)).json
    assert body.get("tools") == expected
    assert "tool_choice" not in body


def test_build_refuses_a_named_tool_choice_without_that_tool() -> None:
    with pytest.raises(GatewayError, match="'search' is not among") as caught:
        adapter().build(chat(tools=(WEATHER,), tool_choice=ToolChoice(tool_name="search")))
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "tool_choice"


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        (GenerationParams(), {}),
        (
            GenerationParams(
                max_tokens=64,
                temperature=0.0,
                top_p=0.9,
                top_k=40,
                stop=("\n", "user:"),
                seed=7,
                presence_penalty=0.5,
                frequency_penalty=-0.5,
            ),
            {
                "options": {
                    "num_predict": 64,
                    "temperature": 0.0,
                    "top_p": 0.9,
                    "top_k": 40,
                    "stop": ["\n", "user:"],
                    "seed": 7,
                    "presence_penalty": 0.5,
                    "frequency_penalty": -0.5,
                }
            },
        ),
        # Ollama has no thinking budget: any budget turns thinking on, 0 turns it off.
        (GenerationParams(reasoning_budget_tokens=2048), {"think": True}),
        (GenerationParams(reasoning_budget_tokens=0), {"think": False}),
    ],
    ids=["none", "all", "think", "no-think"],
)
def test_build_generation_params(generation: GenerationParams, expected: dict[str, Any]) -> None:
    for request in (
        chat(generation=generation),
        CompletionRequest("local", "Hi", generation=generation),
    ):
        body = dict(adapter().build(request).json)
        for key in ("model", "messages", "prompt", "stream"):
            body.pop(key, None)
        assert body == expected


def test_build_completion() -> None:
    built = adapter().build(
        CompletionRequest(
            "local",
            "def compute_gcd(a, b):",
            GenerationParams(temperature=0.0),
            suffix="    return result",
        )
    )
    assert built.url == f"{BASE}/api/generate"
    assert built.json == {
        "model": MODEL,
        "prompt": "def compute_gcd(a, b):",
        "suffix": "    return result",
        "stream": True,
        "options": {"temperature": 0.0},
    }


@pytest.mark.parametrize(("dimensions", "extra"), [(None, {}), (256, {"dimensions": 256})])
def test_build_embeddings(dimensions: int | None, extra: dict[str, int]) -> None:
    built = adapter().build(EmbeddingRequest("local", ("a", "b"), dimensions=dimensions))
    assert built.url == f"{BASE}/api/embed"
    assert built.json == {"model": MODEL, "input": ["a", "b"], **extra}


@pytest.mark.parametrize("keep_alive", ["10m", 0, -1, 1.5])
def test_build_passes_keep_alive_through(keep_alive: str | float) -> None:
    ollama = adapter(keep_alive=keep_alive)
    for request in (
        chat(),
        CompletionRequest("local", "Hi"),
        EmbeddingRequest("local", ("a",)),
    ):
        assert ollama.build(request).json["keep_alive"] == keep_alive


@pytest.mark.parametrize(
    ("request_", "decoder"),
    [
        (chat(), OllamaChatDecoder),
        (CompletionRequest("local", "Hi"), OllamaGenerateDecoder),
        (EmbeddingRequest("local", ("a",)), OllamaEmbeddingDecoder),
    ],
)
def test_decoder_per_operation(
    request_: ChatRequest | CompletionRequest | EmbeddingRequest, decoder: type[object]
) -> None:
    assert type(adapter().decoder(request_)) is decoder


# --- stream decoding: recordings -----------------------------------------------

ERROR_MIDSTREAM: ErrorFields = (
    Status.UNAVAILABLE,
    "UPSTREAM_UNAVAILABLE",
    "ollama: an error was encountered while running the model",
    {"provider": "ollama", "http_status": "500"},
)

RECORDED: list[tuple[str, Callable[[], StreamDecoder], list[Event], ErrorFields | None]] = [
    (
        "ollama_chat_stream.ndjson",
        OllamaChatDecoder,
        [
            Start("", MODEL),
            TextDelta("The"),
            Usage(input_tokens=26, output_tokens=282),
            Finish(FinishReason.STOP, "stop"),
        ],
        None,
    ),
    (
        "ollama_chat_tool_stream.ndjson",
        OllamaChatDecoder,
        [
            Start("", MODEL),
            # No id from this server: a deterministic one stands in.
            ToolCallDelta(0, "call_0", "get_weather", '{"city": "Tokyo"}'),
            Usage(input_tokens=169, output_tokens=15),
            # Ollama says "stop" after tool calls.
            Finish(FinishReason.TOOL_CALLS, "stop"),
        ],
        None,
    ),
    (
        "ollama_generate_stream.ndjson",
        OllamaGenerateDecoder,
        [
            Start("", "gemma4"),
            *texts("That", "'", "s", " a", " fantastic", " question", "!"),
            # This final line carries no counts.
            Usage(reported=False),
            Finish(FinishReason.STOP, "stop"),
        ],
        None,
    ),
    (
        "ollama_error_midstream.ndjson",
        OllamaGenerateDecoder,
        [Start("", "gemma4"), *texts(" Yes", ".", "I", "can")],
        ERROR_MIDSTREAM,
    ),
]
DECODERS = {name: decoder for name, decoder, _, _ in RECORDED}


@pytest.mark.parametrize(
    ("name", "decoder", "expected", "error"), RECORDED, ids=[case[0] for case in RECORDED]
)
def test_recording_decodes_the_same_at_every_split(
    name: str,
    decoder: Callable[[], StreamDecoder],
    expected: list[Event],
    error: ErrorFields | None,
) -> None:
    for chunks in splits(recording(name)):
        events, raised = decode(decoder(), chunks)
        assert events == expected, chunks
        assert (error_fields(raised) if raised else None) == error, chunks


def test_recorded_tool_call_arguments_are_the_json_object() -> None:
    events, _ = decode(OllamaChatDecoder(), [recording("ollama_chat_tool_stream.ndjson")])
    calls = [event for event in events if isinstance(event, ToolCallDelta)]
    assert [json.loads(call.arguments) for call in calls] == [{"city": "Tokyo"}]


# --- stream decoding: synthetic streams ----------------------------------------


def test_thinking_text_and_tool_calls_across_lines() -> None:
    body = ndjson(
        chat_line(thinking="Paris and "),
        chat_line(thinking="Rome."),
        chat_line(content="Checking."),
        # Newer servers send ids; calls of later lines continue the index.
        chat_line(
            tool_calls=[
                {"id": "call_p", "function": {"index": 0, "name": "w", "arguments": {"c": "P"}}}
            ]
        ),
        chat_line(tool_calls=[{"function": {"name": "now", "arguments": {}}}]),
        chat_line(tool_calls=[{"function": {"name": "raw", "arguments": '{"x": 1}'}}]),
        done_line(counts={"prompt_eval_count": 10, "eval_count": 20}),
    )
    assert decode(OllamaChatDecoder(), [body]) == (
        [
            Start("", MODEL),
            ReasoningDelta("Paris and "),
            ReasoningDelta("Rome."),
            TextDelta("Checking."),
            ToolCallDelta(0, "call_p", "w", '{"c": "P"}'),
            ToolCallDelta(1, "call_1", "now", "{}"),
            # A proxy that already serialized the arguments: passed as they are.
            ToolCallDelta(2, "call_2", "raw", '{"x": 1}'),
            Usage(input_tokens=10, output_tokens=20),
            Finish(FinishReason.TOOL_CALLS, "stop"),
        ],
        None,
    )


def test_generate_thinking() -> None:
    body = ndjson(
        {"model": "qwen3", "response": "", "thinking": "Hmm.", "done": False},
        {"model": "qwen3", "response": "Yes.", "done": False},
        {
            "model": "qwen3",
            "response": "",
            "done": True,
            "done_reason": "stop",
            "eval_count": 4,
            "prompt_eval_count": 9,
        },
    )
    assert decode(OllamaGenerateDecoder(), [body]) == (
        [
            Start("", "qwen3"),
            ReasoningDelta("Hmm."),
            TextDelta("Yes."),
            Usage(input_tokens=9, output_tokens=4),
            Finish(FinishReason.STOP, "stop"),
        ],
        None,
    )


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("load", FinishReason.OTHER),
        ("unload", FinishReason.OTHER),
        (None, FinishReason.OTHER),
    ],
)
def test_done_reasons(reason: str | None, finish: FinishReason) -> None:
    events, _ = decode(OllamaChatDecoder(), [ndjson(done_line(reason))])
    assert events[-1] == Finish(finish, reason or "")


@pytest.mark.parametrize(
    ("counts", "usage"),
    [
        (
            {"prompt_eval_count": 30, "prompt_eval_cached_count": 24, "eval_count": 5},
            Usage(input_tokens=30, output_tokens=5, cached_input_tokens=24),
        ),
        # Older servers omit prompt_eval_count for a cached prompt: not reported.
        ({"eval_count": 5}, Usage(output_tokens=5, reported=False)),
        ({"prompt_eval_count": 30}, Usage(input_tokens=30, reported=False)),
    ],
    ids=["cached", "no-prompt-count", "no-output-count"],
)
def test_usage(counts: dict[str, int], usage: Usage) -> None:
    events, _ = decode(OllamaChatDecoder(), [ndjson(done_line(counts=counts))])
    assert events[-2] == usage


def test_error_before_any_output_is_raised_at_once() -> None:
    decoder = OllamaChatDecoder()
    with pytest.raises(GatewayError) as caught:
        decoder.feed(b'{"error": "model runner has unexpectedly stopped"}\n')
    assert error_fields(caught.value) == (
        Status.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
        "ollama: model runner has unexpectedly stopped",
        {"provider": "ollama", "http_status": "500"},
    )


def test_error_after_events_of_its_chunk_is_raised_next() -> None:
    decoder = OllamaChatDecoder()
    events = decoder.feed(ndjson(chat_line(content="Hi"), {"error": "boom"}))
    assert events == [Start("", MODEL), TextDelta("Hi")]
    with pytest.raises(GatewayError, match="boom"):
        decoder.feed(b"")
    with pytest.raises(GatewayError, match="boom"):
        decoder.close()


def test_lines_after_done_are_ignored() -> None:
    body = ndjson(done_line(), chat_line(content="late"), {"error": "late"})
    events, error = decode(OllamaChatDecoder(), [body])
    assert error is None
    assert events[-1] == Finish(FinishReason.STOP, "stop")


CHAT = recording("ollama_chat_stream.ndjson")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (CHAT[: CHAT.index(b"\n") + 1], "ended before its done line"),
        (b"", "ended before its done line"),
        (CHAT[:-10], "unreadable line"),
        (b"{not json}\n", "unreadable line"),
        (b'{"model": "m", "message": {"content": "x"}}\n', "unreadable line: KeyError('done')"),
        (b"[1, 2]\n", "unreadable line"),
    ],
    ids=["truncated", "empty", "cut-in-done-line", "bad-json", "no-done", "not-an-object"],
)
def test_protocol_errors(body: bytes, message: str) -> None:
    _, error = decode(OllamaChatDecoder(), [body])
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert message in error.message


# --- embeddings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        (
            {"model": "all-minilm", "embeddings": [[0.1, 0.2], [0.3, 0.4]], "prompt_eval_count": 8},
            Usage(input_tokens=8),
        ),
        ({"model": "all-minilm", "embeddings": [[0.1, 0.2], [0.3, 0.4]]}, Usage(reported=False)),
    ],
    ids=["counted", "uncounted"],
)
def test_embeddings(body: dict[str, Any], usage: Usage) -> None:
    raw = json.dumps(body).encode()
    for chunks in splits(raw):
        assert decode(OllamaEmbeddingDecoder(), chunks) == (
            [
                Start("", "all-minilm"),
                Embeddings(((0.1, 0.2), (0.3, 0.4))),
                usage,
                Finish(FinishReason.STOP),
            ],
            None,
        )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": "boom"}', (Status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "ollama: boom")),
        (
            b'{"model": "m"}',
            (
                Status.UNAVAILABLE,
                "UPSTREAM_PROTOCOL_ERROR",
                "ollama: unreadable embeddings response: KeyError('embeddings')",
            ),
        ),
        (b"", (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR", None)),
        (b'{"embeddings": [1]}', (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR", None)),
    ],
    ids=["error", "no-embeddings", "empty", "not-vectors"],
)
def test_embeddings_errors(body: bytes, expected: tuple[Status, str, str | None]) -> None:
    _, error = decode(OllamaEmbeddingDecoder(), [body])
    assert error is not None
    status, reason, message = expected
    assert (error.status, error.reason) == (status, reason)
    assert message is None or error.message == message


# --- stream properties ---------------------------------------------------------

FAST = settings(max_examples=150, deadline=None)
CUTS = st.lists(st.integers(min_value=0, max_value=2_000), max_size=30)


def outcome(name: str, chunks: list[bytes]) -> tuple[object, ...]:
    events, error = decode(DECODERS[name](), chunks)
    return (*events, error and error_fields(error))


@pytest.mark.parametrize("name", sorted(DECODERS))
@FAST
@given(cuts=CUTS)
def test_any_split_gives_the_same_events(name: str, cuts: list[int]) -> None:
    body = recording(name)
    assert outcome(name, chunked(body, cuts)) == outcome(name, [body])


@pytest.mark.parametrize("name", sorted(DECODERS))
@FAST
@given(data=st.data())
def test_a_cut_short_body_is_an_error(name: str, data: st.DataObject) -> None:
    body = recording(name).rstrip()
    end = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    cut = outcome(name, [body[:end]])
    assert cut[-1] is not None
    assert cut[-1][0] is Status.UNAVAILABLE  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(DECODERS))
@FAST
@given(garbage=st.binary(min_size=1, max_size=200), data=st.data())
def test_corrupted_bytes_end_in_a_gateway_error_or_decode(
    name: str, garbage: bytes, data: st.DataObject
) -> None:
    body = recording(name)
    at = data.draw(st.integers(min_value=0, max_value=len(body)))
    # decode() lets only GatewayError through: any other exception fails here.
    _, error = decode(DECODERS[name](), [body[:at] + garbage + body[at:]])
    assert error is None or error.status is Status.UNAVAILABLE


@FAST
@given(
    line=st.dictionaries(
        st.sampled_from(["model", "message", "response", "done", "done_reason", "error"]),
        st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.none()),
    )
)
def test_any_json_line_decodes_or_is_a_gateway_error(line: dict[str, Any]) -> None:
    for decoder in (OllamaChatDecoder(), OllamaGenerateDecoder()):
        _, error = decode(decoder, [ndjson(line)])
        assert error is None or error.status is Status.UNAVAILABLE


def test_an_oversize_line_is_refused() -> None:
    body = b'{"model": "' + b"x" * DEFAULT_MAX_EVENT_BYTES
    events, error = decode(OllamaChatDecoder(), network_chunks(body))
    assert events == []
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_EVENT_TOO_LARGE")


# --- HTTP errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "retry_after"),
    [
        (
            404,
            {},
            b'{"error":"model \\"llama9\\" not found, try pulling it first"}',
            (
                Status.FAILED_PRECONDITION,
                "UPSTREAM_NOT_FOUND",
                'ollama: model "llama9" not found, try pulling it first',
                {"provider": "ollama", "http_status": "404"},
            ),
            None,
        ),
        (
            400,
            {},
            b'{"error":"invalid options: num_predict must be an integer"}',
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "ollama: invalid options: num_predict must be an integer",
                {"provider": "ollama", "http_status": "400"},
            ),
            None,
        ),
        (
            401,
            {},
            b'{"error":"unauthorized: key sk-proxy-123"}',
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "ollama rejected the gateway's credentials (HTTP 401)",
                {"provider": "ollama", "http_status": "401"},
            ),
            None,
        ),
        (
            429,
            {"retry-after": "3"},
            b'{"error":"too many requests"}',
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "ollama: too many requests",
                {"provider": "ollama", "http_status": "429"},
            ),
            3.0,
        ),
        (
            500,
            {},
            b'{"error":"llama runner process has terminated: exit status 2"}',
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "ollama: llama runner process has terminated: exit status 2",
                {"provider": "ollama", "http_status": "500"},
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
                "ollama: <html>" + "x" * 494,
                {"provider": "ollama", "http_status": "502"},
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
                "ollama: HTTP 503 with an empty body",
                {"provider": "ollama", "http_status": "503"},
            ),
            None,
        ),
    ],
    ids=["404-model-not-found", "400", "401", "429-retry-after", "500", "non-json", "empty"],
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
