"""OpenAI adapter: request bodies, recorded streams decoded at every split,
and error mapping. Sans-I/O: no server, no network."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sluice.config import ConfigError
from sluice.config.loader import parse_config
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
    Operation,
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
from sluice.providers.bounds import DEFAULT_MAX_EVENT_BYTES
from sluice.providers.http import HttpClientPool
from sluice.providers.openai import (
    PRESETS,
    OpenAIAdapter,
    OpenAIChatDecoder,
    OpenAICompletionDecoder,
    OpenAIEmbeddingDecoder,
    OpenAISettings,
    PresetName,
)
from tests.decoding import chunked
from tests.recordings import recording, splits

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sluice.providers.base import StreamDecoder

# --- helpers ---------------------------------------------------------------------


def openai_settings(**fields: Any) -> OpenAISettings:
    return OpenAISettings.model_validate({"provider": "openai", "name": "gpt-4o", **fields})


def adapter(**fields: Any) -> OpenAIAdapter:
    # build, decoder and parse_error never touch the client.
    return OpenAIAdapter(openai_settings(**fields), client=None)  # type: ignore[arg-type]


def decode(
    decoder: StreamDecoder, parts: list[bytes], events: list[Event] | None = None
) -> list[Event]:
    """Feed every part then close; events also land in `events` as they come."""
    events = [] if events is None else events
    for part in parts:
        events += decoder.feed(part)
    events += decoder.close()
    return events


def decode_error(decoder: StreamDecoder, parts: list[bytes]) -> tuple[list[Event], GatewayError]:
    """The events before the error, and the error."""
    events: list[Event] = []
    try:
        decode(decoder, parts, events)
    except GatewayError as exc:
        return events, exc
    pytest.fail(f"no error; events: {events}")


def texts(*pieces: str) -> list[Event]:
    return [TextDelta(piece) for piece in pieces]


def tool_call(index: int, call_id: str, name: str, *fragments: str) -> list[Event]:
    """The deltas of one streamed call: id and name on the first only."""
    first, *rest = fragments
    return [
        ToolCallDelta(index, call_id, name, first),
        *(ToolCallDelta(index, arguments=fragment) for fragment in rest),
    ]


def tool_arguments(events: list[Event]) -> dict[int, Any]:
    joined: dict[int, str] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            joined[event.index] = joined.get(event.index, "") + event.arguments
    return {index: json.loads(arguments) for index, arguments in joined.items()}


def openai_compat_part(body: bytes) -> bytes:
    """The second stream of tgi_error_midstream.txt (after its comment line)."""
    comment = body.index(b": ---- OpenAI-compatible")
    return body[body.index(b"\n", comment) + 1 :]


# --- recorded streams --------------------------------------------------------------

CHAT_TEXT = [
    *("I'm", " unable", " to", " provide", " real", "-time", " weather", " updates", "."),
    *(" To", " get", " the", " current", " weather", " in", " San", " Francisco", ","),
    *(" I", " recommend", " checking", " a", " reliable", " weather", " website", " or"),
    *(" a", " weather", " app", "."),
]

STREAMS: list[tuple[str, type[StreamDecoder], list[Event], dict[int, Any]]] = [
    (
        "openai_chat_stream.txt",
        OpenAIChatDecoder,
        [
            Start("chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL", "gpt-4o-2024-08-06"),
            *texts(*CHAT_TEXT),
            Usage(input_tokens=14, output_tokens=30),
            Finish(FinishReason.STOP, "stop"),
        ],
        {},
    ),
    (
        "openai_chat_tool_calls_stream.txt",
        OpenAIChatDecoder,
        [
            Start("chatcmpl-ABfwAwrNePHUgBBezonVC6MX3zd63", "gpt-4o-2024-08-06"),
            *tool_call(
                0,
                "call_JMW1whyEaYG438VE1OIflxA2",
                "GetWeatherArgs",
                *("", '{"ci', 'ty": ', '"Edinb', "urgh", '", "c', "ountry", '": "', 'GB", '),
                *('"units', '": "', 'c"}'),
            ),
            *tool_call(
                1,
                "call_DNYTawLBoN8fj3KN6qU9N1Ou",
                "get_stock_price",
                *("", '{"ti', 'cker"', ': "AAP', 'L", ', '"exch', 'ange":', ' "NA', 'SDAQ"', "}"),
            ),
            Usage(input_tokens=149, output_tokens=60),
            Finish(FinishReason.TOOL_CALLS, "tool_calls"),
        ],
        {
            0: {"city": "Edinburgh", "country": "GB", "units": "c"},
            1: {"ticker": "AAPL", "exchange": "NASDAQ"},
        },
    ),
    (
        "openai_completions_stream.txt",
        OpenAICompletionDecoder,
        [
            Start("cmpl-D8ZFN477TMm6AoQohx2jSTOJMh60M", "gpt-3.5-turbo-instruct:20230824-v2"),
            *texts("The", " holiday", " is", " called", ' "', "Gr", "atitude", " Day", '"'),
            *texts(" and", " it", " is", " a", " day", " dedicated", " to"),
            Usage(input_tokens=14, output_tokens=16),
            Finish(FinishReason.LENGTH, "length"),
        ],
        {},
    ),
    (
        "openai_embeddings_response.json",
        OpenAIEmbeddingDecoder,
        [
            Start("", "text-embedding-ada-002"),
            Embeddings(((0.0023064255, -0.009327292, -0.0028842222),)),
            Usage(input_tokens=8),
            Finish(FinishReason.STOP),
        ],
        {},
    ),
    (
        # No usage without include_usage; finish_reason on a chunk with content "".
        "vllm_chat_stream.txt",
        OpenAIChatDecoder,
        [
            Start("chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46", "deepseek-ai/DeepSeek-V3.1"),
            *texts("Okay", ".", " Sure", "."),
            Usage(reported=False),
            Finish(FinishReason.STOP, "stop"),
        ],
        {},
    ),
    (
        "ollama_openai_compat_stream.txt",
        OpenAIChatDecoder,
        [
            Start("chatcmpl-403", "llama3.2"),
            *texts("The", " sky", " is blue."),
            Usage(input_tokens=26, output_tokens=5),
            Finish(FinishReason.STOP, "stop"),
        ],
        {},
    ),
    (
        # "data:" without a space; id "" and the call id repeated on every delta;
        # the recording has no finish chunk and TGI sends no usage; tools
        # were called, so the finish says so.
        "tgi_chat_tool_stream.txt",
        OpenAIChatDecoder,
        [
            Start("", "meta-llama/Llama-3.1-8B-Instruct"),
            *tool_call(
                0,
                "0",
                "get_current_weather",
                *("{", ' "', "location", '":', ' "', "Bro", "oklyn", ",", " NY", '",', ' "'),
                *("format", '":', ' "', "f", "ahrenheit", '"}'),
            ),
            Usage(reported=False),
            Finish(FinishReason.TOOL_CALLS, ""),
        ],
        {0: {"location": "Brooklyn, NY", "format": "fahrenheit"}},
    ),
]


@pytest.mark.parametrize(
    ("name", "decoder", "expected", "arguments"), STREAMS, ids=[s[0] for s in STREAMS]
)
def test_recorded_stream_at_every_split(
    name: str,
    decoder: type[StreamDecoder],
    expected: list[Event],
    arguments: dict[int, Any],
) -> None:
    body = recording(name)
    for parts in splits(body):
        assert decode(decoder(), parts) == expected, f"split at {len(parts[0])}"
    assert tool_arguments(expected) == arguments


TGI_ERRORS = recording("tgi_error_midstream.txt")

STREAM_ERRORS: list[tuple[str, bytes, list[Event], tuple[Status, str, str], dict[str, str]]] = [
    (
        "openai",
        recording("openai_chat_error_midstream.txt"),
        [Start("chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL", "gpt-4o-2024-08-06"), TextDelta("I'm")],
        (
            Status.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
            "openai: The server had an error while processing your request. Sorry about that!",
        ),
        {"http_status": "500", "upstream_type": "server_error"},
    ),
    (
        "vllm-code-is-http-status",
        recording("vllm_error_midstream.txt"),
        [
            Start("chatcmpl-f42e8ae7ddb346e1adfba47e3d710b46", "deepseek-ai/DeepSeek-V3.1"),
            TextDelta("Okay"),
        ],
        (
            Status.INVALID_ARGUMENT,
            "UPSTREAM_BAD_REQUEST",
            "openai: The decoder prompt (length 131073) is longer than the maximum model length"
            " of 131072.",
        ),
        {"http_status": "400", "upstream_type": "BadRequestError"},
    ),
    (
        "tgi-http-status-code",
        openai_compat_part(TGI_ERRORS),
        [],
        (
            Status.INVALID_ARGUMENT,
            "UPSTREAM_BAD_REQUEST",
            "openai: Request failed during generation: Server error: CUDA out of memory",
        ),
        {"http_status": "422"},
    ),
    (
        # TGI's native stream: {"error": "<message>", "error_type": ...}, and no choices before.
        "tgi-native-string-error",
        TGI_ERRORS,
        [],
        (
            Status.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
            "openai: Request failed during generation: Server error: CUDA out of memory",
        ),
        {"http_status": "500"},
    ),
]


@pytest.mark.parametrize(
    ("body", "events_before", "expected", "metadata"),
    [case[1:] for case in STREAM_ERRORS],
    ids=[case[0] for case in STREAM_ERRORS],
)
def test_recorded_error_at_every_split(
    body: bytes,
    events_before: list[Event],
    expected: tuple[Status, str, str],
    metadata: dict[str, str],
) -> None:
    for parts in splits(body):
        events, error = decode_error(OpenAIChatDecoder(), parts)
        assert events == events_before, f"split at {len(parts[0])}"
        assert (error.status, error.reason, error.message) == expected
        assert metadata.items() <= error.metadata.items()


# --- properties ----------------------------------------------------------------------

RECORDED = [(name, decoder, expected) for name, decoder, expected, _ in STREAMS]
SSE_RECORDED = [case for case in RECORDED if case[1] is not OpenAIEmbeddingDecoder]
# Where a stream first says how it ends: a cut before it is always a cut short.
_ENDING = re.compile(rb'"finish_reason":\s*"|data: ?\[DONE\]')


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_chunking_decodes_like_the_whole_body(data: st.DataObject) -> None:
    name, decoder, expected = data.draw(st.sampled_from(RECORDED), label="recording")
    body = recording(name)
    cuts = data.draw(st.sets(st.integers(1, len(body) - 1), max_size=40), label="cuts")
    assert decode(decoder(), chunked(body, cuts)) == expected


def garbage(data: st.DataObject, body: bytes) -> bytes:
    return data.draw(st.binary(max_size=512), label="garbage")


def truncated(data: st.DataObject, body: bytes) -> bytes:
    match = _ENDING.search(body)
    assert match is not None
    return body[: data.draw(st.integers(0, match.start() - 1), label="cut")]


def corrupted(data: st.DataObject, body: bytes) -> bytes:
    """One JSON frame cut short: an object without its end is never JSON."""
    frames = list(re.finditer(rb"^data: ?(\{.*)$", body, re.MULTILINE))
    frame = data.draw(st.sampled_from(frames), label="frame")
    keep = data.draw(st.integers(0, len(frame.group(1)) - 1), label="keep")
    return body[: frame.start(1) + keep] + body[frame.end(1) :]


def oversized(data: st.DataObject, body: bytes) -> bytes:
    frame_end = data.draw(st.sampled_from([0, *(m.end() for m in re.finditer(b"\n\n", body))]))
    return body[:frame_end] + b"data: " + b"x" * DEFAULT_MAX_EVENT_BYTES


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_malformed_stream_ends_in_unavailable(data: st.DataObject) -> None:
    name, decoder, _ = data.draw(st.sampled_from(SSE_RECORDED), label="recording")
    malform = data.draw(st.sampled_from([garbage, truncated, corrupted, oversized]))
    body = malform(data, recording(name))
    cuts = data.draw(st.sets(st.integers(1, max(len(body) - 1, 1)), max_size=8), label="cuts")
    _, error = decode_error(decoder(), chunked(body, cuts))
    assert error.status == Status.UNAVAILABLE


EMBEDDINGS = recording("openai_embeddings_response.json").rstrip()


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=512) | st.integers(0, len(EMBEDDINGS) - 1).map(lambda n: EMBEDDINGS[:n])
)
def test_malformed_embeddings_end_in_unavailable(body: bytes) -> None:
    _, error = decode_error(OpenAIEmbeddingDecoder(), [body])
    assert error.status == Status.UNAVAILABLE


# --- stream edge cases ----------------------------------------------------------------

CHUNK = (
    b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"Hi"},'
    b'"finish_reason":null}]}\n\n'
)
FINISH = (
    b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"%s"}]}\n\n'
)
USAGE = (
    b'data: {"id":"c1","model":"m","choices":[],"usage":{"prompt_tokens":3,'
    b'"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}\n\n'
)
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"stop", FinishReason.STOP),
        (b"length", FinishReason.LENGTH),
        (b"tool_calls", FinishReason.TOOL_CALLS),
        (b"function_call", FinishReason.TOOL_CALLS),
        (b"content_filter", FinishReason.CONTENT_FILTER),
        (b"eos_token", FinishReason.OTHER),
    ],
)
def test_finish_reasons(raw: bytes, reason: FinishReason) -> None:
    events = decode(OpenAIChatDecoder(), [CHUNK + FINISH % raw + USAGE + DONE])
    assert events == [
        Start("c1", "m"),
        TextDelta("Hi"),
        Usage(input_tokens=3, output_tokens=2, cached_input_tokens=1),
        Finish(reason, raw.decode()),
    ]


def test_forced_tool_call_that_says_stop_finishes_as_tool_calls() -> None:
    call = (
        b'data: {"id":"c1","model":"m","choices":[{"delta":{"tool_calls":[{"index":0,'
        b'"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}\n\n'
    )
    events = decode(OpenAIChatDecoder(), [call + FINISH % b"stop" + USAGE + DONE])
    assert events[-1] == Finish(FinishReason.TOOL_CALLS, "stop")


def test_reasoning_fields_and_ignored_events() -> None:
    body = (
        b": keep-alive comment\n\n"
        b'data: {"id":"r","model":"m","choices":[{"delta":{"reasoning_content":"Think"}}]}\n\n'
        b'data: {"choices":[{"delta":{"reasoning":"ing","content":"Done"}}]}\n\n'
        b'event: ping\ndata: {"not":"a chunk"}\n\n' + FINISH % b"stop" + DONE.rstrip()
    )  # a last event without its blank line still counts
    assert decode(OpenAIChatDecoder(), [body]) == [
        Start("r", "m"),
        ReasoningDelta("Think"),
        ReasoningDelta("ing"),
        TextDelta("Done"),
        Usage(reported=False),
        Finish(FinishReason.STOP, "stop"),
    ]


def test_events_after_done_are_ignored() -> None:
    assert decode(OpenAIChatDecoder(), [DONE + CHUNK]) == [
        Start("", ""),
        Usage(reported=False),
        Finish(FinishReason.OTHER, ""),
    ]


def test_stream_without_done_is_complete_with_finish_and_usage() -> None:
    events = decode(OpenAIChatDecoder(), [CHUNK + FINISH % b"stop" + USAGE])
    assert events[-2:] == [
        Usage(input_tokens=3, output_tokens=2, cached_input_tokens=1),
        Finish(FinishReason.STOP, "stop"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        CHUNK,
        CHUNK + FINISH % b"stop",  # no usage: cut before the usage chunk
        CHUNK + USAGE,  # no finish reason
    ],
    ids=["empty", "mid-text", "before-usage", "no-finish"],
)
def test_truncated_stream_is_an_error(body: bytes) -> None:
    _, error = decode_error(OpenAIChatDecoder(), [body])
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert error.message == "openai: stream ended before [DONE]"


@pytest.mark.parametrize(
    "body",
    [b"data: {not json\n\n", b"data: [1, 2]\n\n", CHUNK + b'data: {"id":"c1","choi'],
    ids=["bad-json", "not-an-object", "cut-mid-line"],
)
def test_unreadable_chunk_is_a_protocol_error(body: bytes) -> None:
    _, error = decode_error(OpenAIChatDecoder(), [body])
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert error.message.startswith("openai: unreadable message event: ")


def test_error_after_events_of_the_same_chunk_comes_next() -> None:
    decoder = OpenAIChatDecoder()
    error_chunk = b'data: {"error":{"message":"slow down","type":"rate_limit_error"}}\n\n'
    assert decoder.feed(CHUNK + error_chunk) == [Start("c1", "m"), TextDelta("Hi")]
    with pytest.raises(GatewayError) as info:
        decoder.close()
    assert (info.value.status, info.value.message) == (
        Status.RESOURCE_EXHAUSTED,
        "openai: slow down",
    )


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (
            b'{"error":{"message":"nope","type":"invalid_request_error","param":"n"}}',
            400,
            "nope (param: n)",
        ),
        (b'{"error":{"message":"who","type":"authentication_error"}}', 401, None),
        (b'{"error":{"message":"no","type":"permission_error"}}', 403, None),
        (b'{"error":{"message":"gone","type":"not_found_error"}}', 404, "gone"),
        (b'{"error":{"message":"wait","type":"tokens","code":"rate_limit_exceeded"}}', 429, "wait"),
        (b'{"error":{"message":"busy","code":"503"}}', 503, "busy"),
        (b'{"error":{"message":"odd","type":"new_kind","code":7}}', 500, "odd"),
        (b'{"error":"plain words"}', 500, "plain words"),
    ],
)
def test_in_stream_error_status(data: bytes, status: int, message: str | None) -> None:
    _, error = decode_error(OpenAIChatDecoder(), [CHUNK + b"data: " + data + b"\n\n" + DONE])
    assert error.metadata["http_status"] == str(status)
    if message is not None:
        assert error.message == f"openai: {message}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"error":{"message":"overloaded","type":"server_error"}}', "openai: overloaded"),
        (b'{"message":"bare object","type":"server_error"}', "openai: bare object"),
        (b"plain text", "openai: plain text"),
    ],
)
def test_error_event(data: bytes, message: str) -> None:
    _, error = decode_error(OpenAIChatDecoder(), [b"event: error\ndata: " + data + b"\n\n"])
    assert (error.status, error.message) == (Status.UNAVAILABLE, message)


def test_embeddings_in_index_order() -> None:
    body = (
        b'{"id":"e1","model":"m","data":[{"index":1,"embedding":[2.0]},'
        b'{"index":0,"embedding":[1.0]}],"usage":{"prompt_tokens":4}}'
    )
    assert decode(OpenAIEmbeddingDecoder(), [body]) == [
        Start("e1", "m"),
        Embeddings(((1.0,), (2.0,))),
        Usage(input_tokens=4),
        Finish(FinishReason.STOP),
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (recording("openai_embeddings_response.json")[:-10], "UPSTREAM_PROTOCOL_ERROR"),
        (b'{"object":"list"}', "UPSTREAM_PROTOCOL_ERROR"),
        (
            b'{"error":{"message":"too long","type":"invalid_request_error"}}',
            "UPSTREAM_BAD_REQUEST",
        ),
    ],
    ids=["truncated", "no-data", "error"],
)
def test_embeddings_errors(body: bytes, reason: str) -> None:
    _, error = decode_error(OpenAIEmbeddingDecoder(), [body])
    assert error.reason == reason


# --- requests ----------------------------------------------------------------------

WEATHER = Tool(
    "get_weather",
    "Weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}},
)


def test_chat_request() -> None:
    request = ChatRequest(
        route="chat",
        messages=(
            Message(Role.SYSTEM, (TextPart("Be brief."),)),
            Message(
                Role.USER,
                (
                    TextPart("What is "),
                    TextPart("this?"),
                    ImagePart(data=b"\x89PNG", media_type="image/png"),
                    ImagePart(url="https://example.com/cat.jpg"),
                ),
                name="ann",
            ),
            Message(Role.USER, (TextPart("Weather "), TextPart("in Paris?"))),
            Message(
                Role.ASSISTANT,
                (TextPart("Checking."), ToolCallPart("call_1", "get_weather", '{"city":"Paris"}')),
            ),
            Message(Role.TOOL, (ToolResultPart("call_1", "18C"),)),
            Message(Role.ASSISTANT, (ToolCallPart("call_2", "get_weather", '{"city":"Rome"}'),)),
            # Results in a user turn, as Anthropic-style clients send them.
            Message(
                Role.USER,
                (ToolResultPart("call_2", "no data", is_error=True), TextPart("Any other?")),
            ),
        ),
        generation=GenerationParams(
            max_tokens=100,
            temperature=0.0,
            stop=("END",),
            seed=7,
            top_k=40,
            reasoning_budget_tokens=1024,
        ),
        tools=(WEATHER, Tool("now", "", {})),
        tool_choice=ToolChoice(tool_name="get_weather"),
    )
    upstream = adapter(api_key="sk-test", organization="org-1", project="proj-1").build(request)
    assert upstream.method == "POST"
    assert upstream.url == "https://api.openai.com/v1/chat/completions"
    assert upstream.headers == {
        "content-type": "application/json",
        "authorization": "Bearer sk-test",
        "openai-organization": "org-1",
        "openai-project": "proj-1",
    }
    assert upstream.json == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is "},
                    {"type": "text", "text": "this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
                "name": "ann",
            },
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_2", "content": "no data"},
            {"role": "user", "content": "Any other?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                    },
                },
            },
            {"type": "function", "function": {"name": "now"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 100,
        "temperature": 0.0,
        "stop": ["END"],
        "seed": 7,
    }
    json.dumps(upstream.json)  # what httpx will send


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), "auto"),
        (ToolChoice(ToolChoiceMode.NONE), "none"),
        (ToolChoice(ToolChoiceMode.REQUIRED), "required"),
        (None, None),
    ],
)
def test_tool_choice(choice: ToolChoice | None, expected: str | None) -> None:
    request = ChatRequest("chat", (Message(Role.USER, (TextPart("hi"),)),), tool_choice=choice)
    assert adapter().build(request).json.get("tool_choice") == expected


def test_minimal_chat_request_to_a_compatible_server() -> None:
    request = ChatRequest("chat", (Message(Role.USER, (TextPart("hi"),)),))
    upstream = adapter(name="llama3.2", api_base="http://localhost:11434/v1/").build(request)
    assert upstream.url == "http://localhost:11434/v1/chat/completions"
    assert upstream.headers == {"content-type": "application/json"}
    assert upstream.json == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_inline_image_needs_media_type() -> None:
    request = ChatRequest("chat", (Message(Role.USER, (ImagePart(data=b"x"),)),))
    with pytest.raises(GatewayError) as info:
        adapter().build(request)
    assert (info.value.status, info.value.field) == (
        Status.INVALID_ARGUMENT,
        "messages[0].parts[0]",
    )


def test_completion_request() -> None:
    request = CompletionRequest(
        "complete",
        "Once upon",
        GenerationParams(
            max_tokens=16, top_p=0.9, presence_penalty=0.5, frequency_penalty=-0.5, top_k=3
        ),
        suffix=" happily ever after.",
    )
    upstream = adapter(name="gpt-3.5-turbo-instruct", api_base="https://proxy/v1").build(request)
    assert upstream.url == "https://proxy/v1/completions"
    # Legacy completions know only max_tokens, even on OpenAI.
    assert upstream.json == {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "Once upon",
        "suffix": " happily ever after.",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 16,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }


@pytest.mark.parametrize(
    ("dimensions", "extra"),
    [(None, {}), (256, {"dimensions": 256})],
)
def test_embedding_request(dimensions: int | None, extra: dict[str, int]) -> None:
    request = EmbeddingRequest("embed", ("a", "b"), dimensions=dimensions)
    upstream = adapter(name="text-embedding-3-small", api_key="sk").build(request)
    assert upstream.url == "https://api.openai.com/v1/embeddings"
    assert upstream.headers["authorization"] == "Bearer sk"
    assert upstream.json == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "float",
        **extra,
    }


@pytest.mark.parametrize(
    ("request_", "decoder"),
    [
        (ChatRequest("r", ()), OpenAIChatDecoder),
        (CompletionRequest("r", "p"), OpenAICompletionDecoder),
        (EmbeddingRequest("r", ("x",)), OpenAIEmbeddingDecoder),
    ],
)
def test_decoder_per_operation(
    request_: ChatRequest | CompletionRequest | EmbeddingRequest, decoder: type[StreamDecoder]
) -> None:
    assert type(adapter().decoder(request_)) is decoder


# --- settings ----------------------------------------------------------------------


def test_settings_aliases_and_defaults() -> None:
    aliased = openai_settings(
        openai_organization="org-9", openai_api_key="sk", openai_api_base="http://h/v1"
    )
    assert (aliased.organization, aliased.key, aliased.base_url) == ("org-9", "sk", "http://h/v1")
    plain = openai_settings()
    assert (plain.organization, plain.project, plain.key) == (None, None, "")
    assert plain.base_url == "https://api.openai.com/v1"


async def test_create_adapter_uses_the_pooled_client() -> None:
    pool = HttpClientPool()
    try:
        first = openai_settings(api_base="http://vllm:8000/v1").create_adapter(pool)
        assert isinstance(first, OpenAIAdapter)
        assert first._client is pool.client_for("http://vllm:8000/")
    finally:
        await pool.aclose()


# --- presets -----------------------------------------------------------------------

CHAT_ONLY = frozenset({Operation.CHAT})
NO_EMBEDDINGS = frozenset({Operation.CHAT, Operation.COMPLETION})
EVERY_OPERATION = frozenset(Operation)

# preset, default base URL, operations, chat cap field, legacy completions URL (if any)
PRESET_CASES: list[tuple[str, str, frozenset[Operation], str, str]] = [
    (
        "openai",
        "https://api.openai.com/v1",
        EVERY_OPERATION,
        "max_completion_tokens",
        "https://api.openai.com/v1/completions",
    ),
    (
        "vllm",
        "http://localhost:8000/v1",
        EVERY_OPERATION,
        "max_tokens",
        "http://localhost:8000/v1/completions",
    ),
    ("groq", "https://api.groq.com/openai/v1", CHAT_ONLY, "max_completion_tokens", ""),
    (
        "together",
        "https://api.together.xyz/v1",
        EVERY_OPERATION,
        "max_tokens",
        "https://api.together.xyz/v1/completions",
    ),
    (
        "deepseek",
        "https://api.deepseek.com",
        NO_EMBEDDINGS,
        "max_tokens",
        "https://api.deepseek.com/beta/completions",
    ),
    (
        "openrouter",
        "https://openrouter.ai/api/v1",
        EVERY_OPERATION,
        "max_tokens",
        "https://openrouter.ai/api/v1/completions",
    ),
    ("xai", "https://api.x.ai/v1", NO_EMBEDDINGS, "max_tokens", "https://api.x.ai/v1/completions"),
    (
        "fireworks",
        "https://api.fireworks.ai/inference/v1",
        EVERY_OPERATION,
        "max_tokens",
        "https://api.fireworks.ai/inference/v1/completions",
    ),
]
CAPPED = GenerationParams(max_tokens=50)


def caps(body: Mapping[str, Any]) -> dict[str, Any]:
    """The output-cap fields of a request body."""
    return {key: value for key, value in body.items() if key.startswith("max_")}


def test_every_preset_is_a_provider_name_and_tested() -> None:
    assert set(get_args(PresetName)) == set(PRESETS) == {case[0] for case in PRESET_CASES}


@pytest.mark.parametrize(
    ("preset", "base_url", "operations", "cap_field", "completions_url"),
    PRESET_CASES,
    ids=[case[0] for case in PRESET_CASES],
)
def test_preset_defaults(
    preset: str,
    base_url: str,
    operations: frozenset[Operation],
    cap_field: str,
    completions_url: str,
) -> None:
    configured = openai_settings(provider=preset, name="m")
    assert (configured.base_url, configured.operations) == (base_url, operations)
    upstream = OpenAIAdapter(configured, client=None)  # type: ignore[arg-type]
    chat = upstream.build(ChatRequest("r", (Message(Role.USER, (TextPart("hi"),)),), CAPPED))
    assert chat.url == f"{base_url}/chat/completions"
    assert caps(chat.json) == {cap_field: 50}
    if Operation.COMPLETION in operations:
        completion = upstream.build(CompletionRequest("r", "def f(", CAPPED, suffix="return 1"))
        assert completion.url == completions_url
        assert caps(completion.json) == {"max_tokens": 50}
        assert completion.json["suffix"] == "return 1"
    if Operation.EMBEDDING in operations:
        assert upstream.build(EmbeddingRequest("r", ("x",))).url == f"{base_url}/embeddings"


@pytest.mark.parametrize(
    ("preset", "field"),
    [("openai", "max_tokens"), ("vllm", "max_completion_tokens")],
)
def test_max_tokens_field_overrides_the_preset(preset: str, field: str) -> None:
    upstream = adapter(provider=preset, max_tokens_field=field)
    assert caps(upstream.build(ChatRequest("r", (), CAPPED)).json) == {field: 50}


def test_preset_takes_its_own_key_aliases_and_base_override() -> None:
    configured = openai_settings(
        provider="groq", groq_api_key="gsk-1", groq_api_base="https://proxy.local/groq/"
    )
    assert (configured.key, configured.base_url) == ("gsk-1", "https://proxy.local/groq")
    upstream = OpenAIAdapter(configured, client=None)  # type: ignore[arg-type]
    request = upstream.build(ChatRequest("r", ()))
    assert request.url == "https://proxy.local/groq/chat/completions"
    assert request.headers["authorization"] == "Bearer gsk-1"


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValidationError):
        openai_settings(provider="mistral")


def route_config(provider: str, route_type: str) -> str:
    return (
        "routes:\n"
        "  - name: r\n"
        f"    route_type: {route_type}\n"
        "    model:\n"
        f"      provider: {provider}\n"
        "      name: m\n"
    )


@pytest.mark.parametrize(
    ("preset", "operation"),
    [(case[0], operation) for case in PRESET_CASES for operation in Operation],
    ids=[f"{case[0]}-{operation.name.lower()}" for case in PRESET_CASES for operation in Operation],
)
def test_config_admits_only_the_route_types_a_preset_answers(
    preset: str, operation: Operation
) -> None:
    text = route_config(preset, operation.value)
    if operation in openai_settings(provider=preset).operations:
        model = parse_config(text, "gw.yaml", {}).routes[0].target_configs[0].model
        assert (type(model), model.provider) == (OpenAISettings, preset)
        return
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gw.yaml", {})
    assert f"provider {preset!r} does not answer {operation.value}" in str(caught.value)


def test_preset_names_itself_in_decoder_and_http_errors() -> None:
    vllm = adapter(provider="vllm", name="deepseek-ai/DeepSeek-V3.1")
    assert vllm.provider == "vllm"
    decoder = vllm.decoder(ChatRequest("r", ()))
    _, error = decode_error(decoder, [recording("vllm_error_midstream.txt")])
    assert error.message.startswith("vllm: The decoder prompt (length 131073)")
    assert error.metadata["provider"] == "vllm"
    limited = adapter(provider="groq").parse_error(
        429, {"x-request-id": "req_g"}, b'{"error":{"message":"Rate limit reached"}}'
    )
    assert (limited.message, limited.metadata["upstream_request_id"]) == (
        "groq: Rate limit reached",
        "req_g",
    )
    for request in (CompletionRequest("r", "p"), EmbeddingRequest("r", ("x",))):
        _, error = decode_error(vllm.decoder(request), [b"{"])
        assert error.message.startswith("vllm: ")


def test_together_eos_is_a_stop() -> None:
    # Together's last content chunk carries finish_reason "eos" and the usage.
    chunk = (
        b'data: {"id":"8b43","object":"chat.completion.chunk","model":"meta-llama/Llama-3",'
        b'"choices":[{"index":0,"text":"ABC","finish_reason":"eos","delta":{"token_id":128009,'
        b'"role":"assistant","content":"ABC","tool_calls":null}}],'
        b'"usage":{"prompt_tokens":12,"completion_tokens":27,"total_tokens":39}}\n\n'
    )
    assert decode(OpenAIChatDecoder("together"), [chunk + DONE]) == [
        Start("8b43", "meta-llama/Llama-3"),
        TextDelta("ABC"),
        Usage(input_tokens=12, output_tokens=27),
        Finish(FinishReason.STOP, "eos"),
    ]


@pytest.mark.parametrize(
    ("code", "status"),
    [(b'"server_error"', Status.UNAVAILABLE), (b"429", Status.RESOURCE_EXHAUSTED)],
)
def test_openrouter_keepalive_comments_and_midstream_error(code: bytes, status: Status) -> None:
    # A failure after HTTP 200 is a chunk with `error` and finish_reason "error".
    failed = (
        b'data: {"id":"gen-1","object":"chat.completion.chunk","model":"m","provider":"openai",'
        b'"error":{"code":%s,"message":"Provider disconnected unexpectedly"},'
        b'"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}\n\n'
    ) % code
    body = b": OPENROUTER PROCESSING\n\n" + CHUNK + b": OPENROUTER PROCESSING\n\n" + failed
    events, error = decode_error(
        adapter(provider="openrouter").decoder(ChatRequest("r", ())), [body]
    )
    assert events == [Start("c1", "m"), TextDelta("Hi")]
    assert (error.status, error.message) == (
        status,
        "openrouter: Provider disconnected unexpectedly",
    )


def test_deepseek_cache_hits_count_as_cached_input() -> None:
    usage = (
        b'data: {"id":"c1","model":"deepseek-chat","choices":[],"usage":{"prompt_tokens":20,'
        b'"completion_tokens":7,"prompt_cache_hit_tokens":12,"prompt_cache_miss_tokens":8,'
        b'"completion_tokens_details":{"reasoning_tokens":5}}}\n\n'
    )
    events = decode(OpenAIChatDecoder("deepseek"), [CHUNK + FINISH % b"stop" + usage + DONE])
    assert events[-2] == Usage(
        input_tokens=20, output_tokens=7, cached_input_tokens=12, reasoning_tokens=5
    )


# --- HTTP errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (
            400,
            {"x-request-id": "req_1"},
            b'{"error":{"message":"Invalid value","type":"invalid_request_error",'
            b'"param":"temperature","code":"invalid_value"}}',
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "openai: Invalid value (param: temperature)",
                None,
            ),
        ),
        (
            401,
            {},
            b'{"error":{"message":"Incorrect API key provided: sk-abc",'
            b'"type":"invalid_request_error"}}',
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "openai rejected the gateway's credentials (HTTP 401)",
                None,
            ),
        ),
        (
            429,
            {"retry-after": "2"},
            b'{"error":{"message":"Rate limit reached","type":"requests",'
            b'"code":"rate_limit_exceeded"}}',
            (Status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", "openai: Rate limit reached", 2.0),
        ),
        (
            500,
            {},
            b"<html>Internal Server Error</html>",
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "openai: <html>Internal Server Error</html>",
                None,
            ),
        ),
        (
            502,
            {},
            b"",
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "openai: HTTP 502 with an empty body",
                None,
            ),
        ),
        (
            404,
            {},
            b'{"error":"model \\"llama9\\" not found, try pulling it first"}',
            (
                Status.FAILED_PRECONDITION,
                "UPSTREAM_NOT_FOUND",
                'openai: model "llama9" not found, try pulling it first',
                None,
            ),
        ),
        (
            400,
            {},
            b'{"object":"error","message":"bad prompt","type":"BadRequestError",'
            b'"param":null,"code":400}',
            (Status.INVALID_ARGUMENT, "UPSTREAM_BAD_REQUEST", "openai: bad prompt", None),
        ),
    ],
    ids=["400", "401", "429", "500-html", "502-empty", "404-ollama", "400-old-vllm"],
)
def test_parse_error(
    status: int,
    headers: dict[str, str],
    body: bytes,
    expected: tuple[Status, str, str, float | None],
) -> None:
    error = adapter().parse_error(status, headers, body)
    assert (error.status, error.reason, error.message, error.retry_after) == expected
    assert error.metadata["http_status"] == str(status)
    assert error.metadata.get("upstream_request_id") == headers.get("x-request-id")


def test_parse_error_quotes_at_most_500_characters() -> None:
    error = adapter().parse_error(503, {"retry-after-ms": "1500"}, b"x" * 1000)
    assert error.message == "openai: " + "x" * 500
    assert error.retry_after == 1.5
