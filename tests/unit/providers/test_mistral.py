"""Mistral adapter: request bodies, recorded streams decoded at every split,
stream properties, and error mapping. Sans-I/O: no server, no network."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

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
from sluice.providers.bounds import DEFAULT_MAX_EVENT_BYTES
from sluice.providers.http import HttpClientPool
from sluice.providers.mistral import MistralAdapter, MistralSettings, MistralStreamDecoder
from sluice.providers.openai import OpenAIEmbeddingDecoder
from tests.decoding import chunked, decode, network_chunks
from tests.recordings import recording, splits

FAST = settings(max_examples=150, deadline=None)
CUTS = st.lists(st.integers(min_value=0, max_value=40_000), max_size=30)

# --- helpers ---------------------------------------------------------------------


def mistral_settings(**fields: Any) -> MistralSettings:
    return MistralSettings.model_validate(
        {"provider": "mistral", "name": "mistral-small-latest", **fields}
    )


def adapter(**fields: Any) -> MistralAdapter:
    # build, decoder and parse_error never touch the client.
    return MistralAdapter(mistral_settings(**fields), client=None)  # type: ignore[arg-type]


def events_of(body: bytes) -> list[Event]:
    """The events of a complete body fed whole; fails on an error."""
    events, error = decode(MistralStreamDecoder(), [body])
    assert error is None, error
    return events


def error_of(body: bytes) -> tuple[list[Event], GatewayError]:
    events, error = decode(MistralStreamDecoder(), [body])
    assert error is not None, events
    return events, error


def outcome(chunks: list[bytes]) -> tuple[object, ...]:
    """Events and error of a body, comparable across splits."""
    events, error = decode(MistralStreamDecoder(), chunks)
    return (*events, error and (error.status, error.reason, error.message))


def frames(body: bytes, *indexes: int) -> bytes:
    """The SSE events of a recording at `indexes`, verbatim, as one body."""
    events = body.split(b"\n\n")
    return b"".join(events[i] + b"\n\n" for i in indexes)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    payload = {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
DONE = b"data: [DONE]\n\n"


def finish(reason: str = "stop") -> bytes:
    return chunk({"content": ""}, reason, usage=USAGE)


# --- recorded streams --------------------------------------------------------------

CHAT = recording("mistral_chat_stream.txt")
TOOL = recording("mistral_chat_tool_stream.txt")
CHAT_ID = "9f9d90210f194076abeee223863eaaf0"

CHAT_REASONING = (
    "Okay, the user is asking how to cross the street. I know that crossing the street safely"
    " involves a few key steps: first, look both ways to check for oncoming traffic; second,"
    " use a crosswalk if one is available; third, obey any traffic signals or signs that may be"
    " present; and finally, proceed with caution until you have safely reached the other side."
    " Let me compile this information into a clear and concise response."
)
STEPS = (
    "To cross the street safely, follow these steps:\n\n"
    "1. Look both ways to check for oncoming traffic.\n"
    "2. Use a crosswalk if one is available.\n"
    "3. Obey any traffic signals or signs that may be present.\n"
    "4. Proceed with caution until you have safely reached the other side.\n"
)
CHAT_TEXT = (
    f"{STEPS}\n```markdown\n{STEPS}```\n\nBy following these steps, you can ensure a safe crossing."
)


def test_chat_recording_whole() -> None:
    """Thinking chunks become reasoning, string content text, in order; the
    usage of the finish chunk is the answer's."""
    events = events_of(CHAT)
    reasoning = [e.text for e in events if isinstance(e, ReasoningDelta)]
    text = [e.text for e in events if isinstance(e, TextDelta)]
    assert events[0] == Start(CHAT_ID, "magistral-medium-latest")
    assert events[1 : 1 + len(reasoning)] == [ReasoningDelta(r) for r in reasoning]
    assert events[1 + len(reasoning) : -2] == [TextDelta(t) for t in text]
    assert events[-2:] == [
        Usage(input_tokens=10, output_tokens=232),
        Finish(FinishReason.STOP, "stop"),
    ]
    assert (len(reasoning), len(text)) == (57, 97)
    assert reasoning[:3] == ["Okay", ", the", " user"]
    assert ("".join(reasoning), "".join(text)) == (CHAT_REASONING, CHAT_TEXT)


RECORDED: list[tuple[str, bytes, list[Event]]] = [
    (
        # The whole call in one delta (no index, no type), finish and usage on the same chunk.
        "tool-call",
        TOOL,
        [
            Start("b3999b8c93e04e11bcbff7bcab829667", "mistral-small-latest"),
            ToolCallDelta(0, "gSIMJiOkT", "weather", '{"location": "San Francisco"}'),
            Usage(input_tokens=124, output_tokens=22),
            Finish(FinishReason.TOOL_CALLS, "tool_calls"),
        ],
    ),
    (
        # Every kind of event of mistral_chat_stream.txt, verbatim: the role
        # and empty chunks, thinking, the empty thinking chunk that ends it,
        # text, the finish with usage, [DONE]. Its every-byte splits cost a
        # fraction of the whole recording's (see the property test for that).
        "magistral-thinking",
        frames(CHAT, 0, 1, 2, 3, 58, 59, 60, 61, 156, 157, 158),
        [
            Start(CHAT_ID, "magistral-medium-latest"),
            ReasoningDelta("Okay"),
            ReasoningDelta(", the"),
            ReasoningDelta(" concise response."),
            TextDelta("To"),
            TextDelta(" cross the street safely"),
            TextDelta("."),
            Usage(input_tokens=10, output_tokens=232),
            Finish(FinishReason.STOP, "stop"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in RECORDED], ids=[c[0] for c in RECORDED]
)
def test_recorded_stream_at_every_split(body: bytes, expected: list[Event]) -> None:
    for parts in splits(body):
        assert decode(MistralStreamDecoder(), parts) == (expected, None), (
            f"split at {len(parts[0])}"
        )


def test_tool_call_arguments_are_the_whole_json_object() -> None:
    calls = [e for e in events_of(TOOL) if isinstance(e, ToolCallDelta)]
    assert [json.loads(c.arguments) for c in calls] == [{"location": "San Francisco"}]


# --- stream properties ----------------------------------------------------------------

RECORDINGS = {"chat": CHAT, "tool": TOOL}
# Where each recording's JSON objects start (after `data: {`).
JSON_STARTS = {
    name: [i + len(b"data: {") for i in range(len(body)) if body.startswith(b"data: {", i)]
    for name, body in RECORDINGS.items()
}


@pytest.mark.parametrize("name", sorted(RECORDINGS))
@FAST
@given(cuts=CUTS)
def test_any_split_gives_the_same_events(name: str, cuts: list[int]) -> None:
    body = RECORDINGS[name]
    assert outcome(chunked(body, cuts)) == outcome([body])


@pytest.mark.parametrize("name", sorted(RECORDINGS))
@FAST
@given(data=st.data())
def test_a_cut_short_body_is_an_error_or_the_whole_answer(name: str, data: st.DataObject) -> None:
    body = RECORDINGS[name].rstrip()
    end = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    cut = outcome([body[:end]])
    if cut[-1] is None:
        # Usage comes with the finish: a cut just before [DONE] loses nothing.
        assert cut == outcome([body])
    else:
        assert cut[-1][:2] == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(RECORDINGS))
@FAST
@given(garbage=st.binary(min_size=1, max_size=200), data=st.data())
def test_inserted_garbage_ends_in_a_gateway_error_or_decodes(
    name: str, garbage: bytes, data: st.DataObject
) -> None:
    body = RECORDINGS[name]
    at = data.draw(st.integers(min_value=0, max_value=len(body)))
    # decode() lets only GatewayError through: any other exception fails here.
    _events, error = decode(MistralStreamDecoder(), [body[:at] + garbage + body[at:]])
    assert error is None or error.status is Status.UNAVAILABLE


@pytest.mark.parametrize("name", sorted(RECORDINGS))
@FAST
@given(data=st.data())
def test_a_corrupted_json_frame_is_a_protocol_error(name: str, data: st.DataObject) -> None:
    body = RECORDINGS[name]
    at = data.draw(st.sampled_from(JSON_STARTS[name]))
    width = data.draw(st.integers(min_value=1, max_value=20))
    corrupted = body[:at] + b"\x00" * width + body[at + width :]
    _events, error = decode(MistralStreamDecoder(), chunked(corrupted, data.draw(CUTS)))
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")


@pytest.mark.parametrize(
    "body",
    [
        # Checked at each read of the body: an event is refused by the read
        # that takes it over the bound, whether or not that read ends it.
        b"data: " + b"x" * (DEFAULT_MAX_EVENT_BYTES + 2**16) + b"\n\n",
        TOOL[:50] + b"y" * DEFAULT_MAX_EVENT_BYTES,
        b"data: {\n" * (DEFAULT_MAX_EVENT_BYTES // 8 + 1),  # data lines, no blank line
    ],
    ids=["oversize-line", "oversize-mid-frame", "endless-data-lines"],
)
def test_an_oversize_event_is_refused(body: bytes) -> None:
    _events, error = decode(MistralStreamDecoder(), network_chunks(body))
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_EVENT_TOO_LARGE")


# --- stream edge cases ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("model_length", FinishReason.LENGTH),
        ("tool_calls", FinishReason.TOOL_CALLS),
        ("something_new", FinishReason.OTHER),
    ],
)
def test_finish_reasons(raw: str, reason: FinishReason) -> None:
    events = events_of(chunk({"content": "Hi"}) + finish(raw) + DONE)
    assert events == [
        Start("c1", "m"),
        TextDelta("Hi"),
        Usage(input_tokens=3, output_tokens=2),
        Finish(reason, raw),
    ]


def test_finish_reason_error_fails_after_the_text_of_its_chunk() -> None:
    body = chunk({"content": "Hi"}) + chunk({"content": " th"}, "error", usage=USAGE) + DONE
    for parts in splits(body):
        events, error = decode(MistralStreamDecoder(), parts)
        assert events == [Start("c1", "m"), TextDelta("Hi"), TextDelta(" th")]
        assert error is not None
        assert (error.status, error.reason, error.message) == (
            Status.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
            "mistral: generation failed (finish_reason: error)",
        )
        assert error.metadata == {"provider": "mistral", "http_status": "500"}


def test_typed_content_chunks() -> None:
    """Thinking and text in one delta, in order; references, images and empty
    thinking carry no text."""
    content = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "Hmm"}, {"type": "x"}]},
        {"type": "thinking", "thinking": [], "closed": True},
        {"type": "text", "text": "Yes"},
        {"type": "reference", "reference_ids": [1]},
        {"type": "text", "text": ""},
        {"type": "text", "text": ", see [1]"},
    ]
    events = events_of(chunk({"role": "assistant", "content": content}) + finish() + DONE)
    assert events[1:-2] == [ReasoningDelta("Hmm"), TextDelta("Yes"), TextDelta(", see [1]")]


@pytest.mark.parametrize(
    "content",
    [[1], ["text"], [{"type": "thinking", "thinking": "not a list of chunks"}]],
    ids=["number", "string", "thinking-string"],
)
def test_malformed_typed_content_is_a_protocol_error(content: list[Any]) -> None:
    _events, error = error_of(chunk({"content": content}) + finish() + DONE)
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert error.message.startswith("mistral: unreadable message event: ")


def test_parallel_whole_tool_calls_without_index_or_id() -> None:
    calls = [
        {"id": "aaaaaaaaa", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"function": {"name": "g", "arguments": "{}"}},
    ]
    events = events_of(chunk({"content": None, "tool_calls": calls}, "tool_calls") + DONE)
    assert events == [
        Start("c1", "m"),
        ToolCallDelta(0, "aaaaaaaaa", "f", '{"a": 1}'),
        # No id from upstream: a stable stand-in, as the contract asks.
        ToolCallDelta(1, "call_1", "g", "{}"),
        Usage(reported=False),
        Finish(FinishReason.TOOL_CALLS, "tool_calls"),
    ]


def test_tool_call_fragments_with_an_index_concatenate() -> None:
    """Some models behind Mistral's API stream calls OpenAI's way: the name
    first (here without an id), then the arguments under the same index."""
    first = {"index": 0, "function": {"name": "search", "arguments": ""}}
    rest = {"index": 0, "function": {"name": "", "arguments": '{"q": "x"}'}}
    body = (
        chunk({"tool_calls": [first]})
        + chunk({"tool_calls": [rest]})
        + chunk({"content": ""}, "stop", usage=USAGE)
        + DONE
    )
    events = events_of(body)
    assert events[1:] == [
        ToolCallDelta(0, "call_0", "search", ""),
        ToolCallDelta(0, "", "", '{"q": "x"}'),
        Usage(input_tokens=3, output_tokens=2),
        # A forced call says "stop": the caller still learns tools were called.
        Finish(FinishReason.TOOL_CALLS, "stop"),
    ]


def test_cached_prompt_tokens() -> None:
    usage = {**USAGE, "prompt_tokens_details": {"cached_tokens": 2}}
    events = events_of(chunk({"content": "Hi"}, "stop", usage=usage) + DONE)
    assert events[-2] == Usage(input_tokens=3, output_tokens=2, cached_input_tokens=2)


def test_fim_stream_is_chat_shaped() -> None:
    body = (
        chunk({"role": "assistant", "content": ""})
        + chunk({"content": "return a + b"})
        + chunk({"content": ""}, "stop", usage=USAGE)
        + DONE
    )
    decoder = adapter().decoder(CompletionRequest("fim", "def add(a, b):"))
    assert decode(decoder, [body]) == (
        [
            Start("c1", "m"),
            TextDelta("return a + b"),
            Usage(input_tokens=3, output_tokens=2),
            Finish(FinishReason.STOP, "stop"),
        ],
        None,
    )


@pytest.mark.parametrize(
    "body",
    [b"", chunk({"content": "Hi"}), chunk({"content": "Hi"}, "stop")],
    ids=["empty", "mid-text", "finish-without-usage"],
)
def test_truncated_stream_is_an_error(body: bytes) -> None:
    _events, error = error_of(body)
    assert (error.status, error.reason, error.message) == (
        Status.UNAVAILABLE,
        "UPSTREAM_PROTOCOL_ERROR",
        "mistral: stream ended before [DONE]",
    )


def test_in_stream_error_object_names_mistral() -> None:
    error_chunk = b'data: {"error":{"message":"slow down","type":"rate_limit_error"}}\n\n'
    events, error = error_of(chunk({"content": "Hi"}) + error_chunk)
    assert events == [Start("c1", "m"), TextDelta("Hi")]
    assert (error.status, error.message) == (Status.RESOURCE_EXHAUSTED, "mistral: slow down")


# --- embeddings ------------------------------------------------------------------------

EMBEDDINGS = (
    b'{"id":"fe87621011b544829fe9f966488f3d84","object":"list","data":['
    b'{"object":"embedding","embedding":[-0.0535888671875,0.019500732421875],"index":1},'
    b'{"object":"embedding","embedding":[-0.0389404296875,0.048065185546875],"index":0}],'
    b'"model":"mistral-embed","usage":{"prompt_tokens":16,"total_tokens":16,'
    b'"completion_tokens":0,"prompt_tokens_details":null}}'
)


def test_embeddings_response() -> None:
    request = EmbeddingRequest("embed", ("a", "b"))
    for parts in splits(EMBEDDINGS):
        assert decode(adapter().decoder(request), parts)[0] == [
            Start("fe87621011b544829fe9f966488f3d84", "mistral-embed"),
            Embeddings(
                ((-0.0389404296875, 0.048065185546875), (-0.0535888671875, 0.019500732421875))
            ),
            Usage(input_tokens=16),
            Finish(FinishReason.STOP),
        ]


def test_unreadable_embeddings_name_mistral() -> None:
    decoder = adapter().decoder(EmbeddingRequest("embed", ("a",)))
    _events, error = decode(decoder, [EMBEDDINGS[:-10]])
    assert error is not None
    assert error.message.startswith("mistral: unreadable embeddings response")


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
                name="ann",  # Mistral's messages have no name: dropped
            ),
            Message(
                Role.ASSISTANT,
                (
                    TextPart("Checking."),
                    ToolCallPart("D681PevKs", "get_weather", '{"city":"Paris"}'),
                ),
            ),
            Message(Role.TOOL, (ToolResultPart("D681PevKs", "18C"),)),
            # An id from another provider, as a conversation moved to Mistral has.
            Message(Role.ASSISTANT, (ToolCallPart("call_2", "get_weather", '{"city":"Rome"}'),)),
            Message(Role.USER, (ToolResultPart("call_2", "no data", is_error=True),)),
        ),
        generation=GenerationParams(
            max_tokens=100,
            temperature=0.0,
            top_p=0.9,
            stop=("END",),
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            top_k=40,
            reasoning_budget_tokens=1024,
        ),
        tools=(WEATHER, Tool("now", "", {})),
        tool_choice=ToolChoice(tool_name="get_weather"),
    )
    upstream = adapter(api_key="sk-test").build(request)
    rome_id = "1b68f83fa"  # sha256("call_2"), 9 characters
    assert upstream.method == "POST"
    assert upstream.url == "https://api.mistral.ai/v1/chat/completions"
    assert upstream.headers == {
        "content-type": "application/json",
        "authorization": "Bearer sk-test",
    }
    assert upstream.json == {
        "model": "mistral-small-latest",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is "},
                    {"type": "text", "text": "this?"},
                    {"type": "image_url", "image_url": "data:image/png;base64,iVBORw=="},
                    {"type": "image_url", "image_url": "https://example.com/cat.jpg"},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "D681PevKs",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "D681PevKs", "content": "18C", "name": "get_weather"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": rome_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": rome_id, "content": "no data", "name": "get_weather"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "description": "Weather in a city",
                },
            },
            # Mistral requires a schema even for a tool without parameters.
            {
                "type": "function",
                "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
            },
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "stream": True,
        "max_tokens": 100,
        "temperature": 0.0,
        "top_p": 0.9,
        "stop": ["END"],
        "random_seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }
    json.dumps(upstream.json)  # what httpx will send


def test_foreign_tool_call_ids_map_the_same_for_call_and_result() -> None:
    ids = ("call_JMW1whyEaYG438VE1OIflxA2", "toolu_01NRLabsLyVHZPKxbKvkfSMn", "0", "abcdefghij")
    for call_id in ids:
        request = ChatRequest(
            "chat",
            (
                Message(Role.ASSISTANT, (ToolCallPart(call_id, "f", "{}"),)),
                Message(Role.TOOL, (ToolResultPart(call_id, "ok"),)),
            ),
        )
        call, result = adapter().build(request).json["messages"]
        mapped = call["tool_calls"][0]["id"]
        assert mapped == result["tool_call_id"]
        assert len(mapped) == 9
        assert mapped.isalnum()
        assert mapped != call_id


def test_result_of_an_unknown_call_has_no_name() -> None:
    request = ChatRequest("chat", (Message(Role.TOOL, (ToolResultPart("D681PevKs", "ok"),)),))
    assert adapter().build(request).json["messages"] == [
        {"role": "tool", "tool_call_id": "D681PevKs", "content": "ok"}
    ]


def test_minimal_chat_request_sends_only_what_is_set() -> None:
    request = ChatRequest("chat", (Message(Role.USER, (TextPart("hi"),)),))
    upstream = adapter(api_base="http://mistral.internal:8080/").build(request)
    assert upstream.url == "http://mistral.internal:8080/v1/chat/completions"
    # No key, no authorization header; no stream_options (Mistral rejects it).
    assert upstream.headers == {"content-type": "application/json"}
    assert upstream.json == {
        "model": "mistral-small-latest",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }


def test_safe_prompt() -> None:
    request = ChatRequest("chat", (Message(Role.USER, (TextPart("hi"),)),))
    assert adapter(safe_prompt=True).build(request).json["safe_prompt"] is True
    fim = adapter(safe_prompt=True).build(CompletionRequest("fim", "x"))
    assert "safe_prompt" not in fim.json  # the FIM endpoint has no such field


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), "auto"),
        (ToolChoice(ToolChoiceMode.NONE), "none"),
        (ToolChoice(ToolChoiceMode.REQUIRED), "any"),
        (ToolChoice(), "auto"),
        (ToolChoice(tool_name="f"), {"type": "function", "function": {"name": "f"}}),
        (None, None),
    ],
)
def test_tool_choice(choice: ToolChoice | None, expected: object) -> None:
    request = ChatRequest("chat", (Message(Role.USER, (TextPart("hi"),)),), tool_choice=choice)
    assert adapter().build(request).json.get("tool_choice") == expected


def test_inline_image_needs_media_type() -> None:
    request = ChatRequest(
        "chat",
        (Message(Role.USER, (TextPart("see"),)), Message(Role.USER, (ImagePart(data=b"x"),))),
    )
    with pytest.raises(GatewayError) as info:
        adapter().build(request)
    assert (info.value.status, info.value.field) == (
        Status.INVALID_ARGUMENT,
        "messages[1].parts[0]",
    )


@pytest.mark.parametrize(
    ("request_", "body"),
    [
        (
            CompletionRequest(
                "fim",
                "def add(a, b):",
                GenerationParams(
                    max_tokens=64,
                    temperature=0.2,
                    top_p=0.95,
                    stop=("\n\n",),
                    seed=1,
                    presence_penalty=1.0,
                    frequency_penalty=1.0,
                    top_k=5,
                ),
                suffix="\n\nprint(add(1, 2))",
            ),
            {
                "model": "codestral-latest",
                "prompt": "def add(a, b):",
                "suffix": "\n\nprint(add(1, 2))",
                "stream": True,
                "max_tokens": 64,
                "temperature": 0.2,
                "top_p": 0.95,
                "stop": ["\n\n"],
                "random_seed": 1,
            },
        ),
        (
            CompletionRequest("fim", "def add(a, b):"),
            {"model": "codestral-latest", "prompt": "def add(a, b):", "stream": True},
        ),
    ],
    ids=["every-param", "no-suffix"],
)
def test_fim_request(request_: CompletionRequest, body: dict[str, Any]) -> None:
    upstream = adapter(name="codestral-latest", api_key="sk").build(request_)
    assert upstream.url == "https://api.mistral.ai/v1/fim/completions"
    assert upstream.headers["authorization"] == "Bearer sk"
    assert upstream.json == body


@pytest.mark.parametrize(
    ("dimensions", "extra"),
    [(None, {}), (256, {"output_dimension": 256})],
)
def test_embedding_request(dimensions: int | None, extra: dict[str, int]) -> None:
    request = EmbeddingRequest("embed", ("a", "b"), dimensions=dimensions)
    upstream = adapter(name="codestral-embed", api_key="sk").build(request)
    assert upstream.url == "https://api.mistral.ai/v1/embeddings"
    assert upstream.headers["authorization"] == "Bearer sk"
    assert upstream.json == {"model": "codestral-embed", "input": ["a", "b"], **extra}


@pytest.mark.parametrize(
    ("request_", "decoder"),
    [
        (ChatRequest("r", ()), MistralStreamDecoder),
        (CompletionRequest("r", "p"), MistralStreamDecoder),
        (EmbeddingRequest("r", ("x",)), OpenAIEmbeddingDecoder),
    ],
)
def test_decoder_per_operation(
    request_: ChatRequest | CompletionRequest | EmbeddingRequest, decoder: type[object]
) -> None:
    assert type(adapter().decoder(request_)) is decoder


# --- settings ----------------------------------------------------------------------


def test_settings_aliases_and_defaults() -> None:
    aliased = mistral_settings(mistral_api_key="sk", mistral_api_base="https://eu.example/")
    assert (aliased.key, aliased.base_url) == ("sk", "https://eu.example")
    plain = mistral_settings()
    assert (plain.key, plain.base_url, plain.safe_prompt) == ("", "https://api.mistral.ai", False)


def test_settings_reject_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        mistral_settings(random_seed=1)


async def test_create_adapter_uses_the_pooled_client() -> None:
    pool = HttpClientPool()
    try:
        created = mistral_settings().create_adapter(pool)
        assert isinstance(created, MistralAdapter)
        assert created._client is pool.client_for("https://api.mistral.ai/")
    finally:
        await pool.aclose()


# --- HTTP errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (
            400,
            {"mistral-correlation-id": "c-400"},
            b'{"object":"error","message":"Invalid model: mistral-small-250",'
            b'"type":"invalid_model","param":null,"code":"1500"}',
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "mistral: Invalid model: mistral-small-250",
                "invalid_model",
                "c-400",
                None,
            ),
        ),
        (
            400,
            {},
            b'{"object":"error","message":"Unknown model","type":"invalid_request_error",'
            b'"param":"model","code":"unknown_model"}',
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "mistral: Unknown model (param: model)",
                "invalid_request_error",
                "",
                None,
            ),
        ),
        (
            422,
            {"mistral-correlation-id": "c-422"},
            b'{"object":"error","message":{"detail":[{"type":"less_than_equal",'
            b'"loc":["body","temperature"],"msg":"Input should be less than or equal to 1.5",'
            b'"input":3,"ctx":{"le":1.5}}]},"type":"invalid_request_error","param":null,"code":null}',
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "mistral: temperature: Input should be less than or equal to 1.5",
                "invalid_request_error",
                "c-422",
                None,
            ),
        ),
        (
            422,
            {},
            b'{"detail":[{"loc":["body","messages",0,"content"],"msg":"Field required",'
            b'"type":"missing"},{"loc":["query"],"msg":"bad","type":"x"},{"msg":"odd"}]}',
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "mistral: messages.0.content: Field required; query: bad; odd",
                "",
                "",
                None,
            ),
        ),
        (
            401,
            {"x-kong-request-id": "kong-1"},
            b'{"message":"Unauthorized","request_id":"933f233947ff6d346065bb297e4a4d56"}',
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "mistral rejected the gateway's credentials (HTTP 401)",
                "",
                "933f233947ff6d346065bb297e4a4d56",
                None,
            ),
        ),
        (
            401,
            {"x-kong-request-id": "kong-2"},
            b'{"detail":"Unauthorized"}',
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "mistral rejected the gateway's credentials (HTTP 401)",
                "",
                "kong-2",
                None,
            ),
        ),
        (
            429,
            {"retry-after": "2", "mistral-correlation-id": "c-429"},
            b'{"object":"error","message":"Rate limit exceeded","type":"rate_limited",'
            b'"param":null,"code":"1300"}',
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "mistral: Rate limit exceeded",
                "rate_limited",
                "c-429",
                2.0,
            ),
        ),
        (
            500,
            {},
            b"<html>Internal Server Error</html>",
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "mistral: <html>Internal Server Error</html>",
                "",
                "",
                None,
            ),
        ),
        (
            503,
            {"retry-after-ms": "1500"},
            b'{"object":"error","message":"Service unavailable","type":"server_error"}',
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "mistral: Service unavailable",
                "server_error",
                "",
                1.5,
            ),
        ),
        (
            502,
            {},
            b"",
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "mistral: HTTP 502 with an empty body",
                "",
                "",
                None,
            ),
        ),
        (
            504,
            {},
            b'{"unexpected":"shape"}',
            (
                Status.DEADLINE_EXCEEDED,
                "UPSTREAM_HTTP_TIMEOUT",
                'mistral: {"unexpected":"shape"}',
                "",
                "",
                None,
            ),
        ),
    ],
    ids=[
        "400",
        "400-param",
        "422-nested-detail",
        "422-detail",
        "401-gateway",
        "401-detail",
        "429",
        "500-html",
        "503-retry-after-ms",
        "502-empty",
        "504-other-json",
    ],
)
def test_parse_error(
    status: int,
    headers: dict[str, str],
    body: bytes,
    expected: tuple[Status, str, str, str, str, float | None],
) -> None:
    error = adapter().parse_error(status, headers, body)
    upstream_type = error.metadata.get("upstream_type", "")
    request_id = error.metadata.get("upstream_request_id", "")
    assert (
        error.status,
        error.reason,
        error.message,
        upstream_type,
        request_id,
        error.retry_after,
    ) == expected
    assert error.metadata["provider"] == "mistral"
    assert error.metadata["http_status"] == str(status)


def test_parse_error_quotes_at_most_500_characters() -> None:
    error = adapter().parse_error(500, {}, b"x" * 1000)
    assert error.message == "mistral: " + "x" * 500
