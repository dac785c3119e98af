"""llama.cpp server: native /completion request bodies, recorded streams
decoded at every split, stream properties, error mapping; chat and
embeddings through its OpenAI-compatible /v1. No network."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    Message,
    Role,
    Start,
    TextDelta,
    TextPart,
    Usage,
)
from sluice.errors import GatewayError, Status
from sluice.providers.http import HttpClientPool
from sluice.providers.llama_cpp import (
    LlamaCppAdapter,
    LlamaCppCompletionDecoder,
    LlamaCppSettings,
)
from sluice.providers.openai import OpenAIChatDecoder
from tests.decoding import chunked, decode
from tests.recordings import recording, splits

MODEL = "phi-4"
ErrorFields = tuple[Status, str, str, dict[str, str]]


def adapter(**fields: Any) -> LlamaCppAdapter:
    config = LlamaCppSettings.model_validate({"provider": "llama_cpp", "name": MODEL, **fields})
    created = config.create_adapter(HttpClientPool())
    assert isinstance(created, LlamaCppAdapter)
    return created


def error_fields(error: GatewayError) -> ErrorFields:
    return error.status, error.reason, error.message, error.metadata


def test_urls_from_the_server_root() -> None:
    root = adapter()
    chat = ChatRequest("r", (Message(Role.USER, (TextPart("hi"),)),))
    assert root.build(chat).url == "http://localhost:8080/v1/chat/completions"
    assert root.build(CompletionRequest("r", "hi")).url == "http://localhost:8080/completion"
    assert root.build(EmbeddingRequest("r", ("hi",))).url == "http://localhost:8080/v1/embeddings"
    other = adapter(api_base="http://10.0.0.7:9000/", api_key="k")
    built = other.build(CompletionRequest("r", "hi"))
    assert built.url == "http://10.0.0.7:9000/completion"
    assert built.headers == {"content-type": "application/json", "authorization": "Bearer k"}


def test_completion_body_uses_the_native_names() -> None:
    generation = GenerationParams(
        max_tokens=20, temperature=0.5, top_p=0.9, top_k=40, stop=("\n",), seed=7,
        presence_penalty=0.1, frequency_penalty=0.2, reasoning_budget_tokens=99,
    )  # fmt: skip
    body = adapter().build(CompletionRequest("r", "hi", generation=generation)).json
    assert body == {
        "prompt": "hi", "stream": True, "n_predict": 20, "temperature": 0.5, "top_p": 0.9,
        "top_k": 40, "stop": ["\n"], "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.2,
    }  # fmt: skip


def test_a_suffix_is_refused_naming_the_field() -> None:
    with pytest.raises(GatewayError) as caught:
        adapter().build(CompletionRequest("r", "def f(", suffix="x"))
    assert (caught.value.status, caught.value.field) == (Status.INVALID_ARGUMENT, "suffix")


def test_chat_decodes_as_openai_under_its_own_name() -> None:
    chat = ChatRequest("r", (Message(Role.USER, (TextPart("hi"),)),))
    decoder = adapter().decoder(chat)
    assert isinstance(decoder, OpenAIChatDecoder)
    events, error = decode(decoder, [recording("llama_cpp_chat_stream.txt")])
    assert error is None
    assert events == [
        Start("chatcmpl-51VeqNldSlrUKqMP1Seka7KfXksFbSea", "phi-4"),
        TextDelta(" climb"),
        Usage(input_tokens=13, output_tokens=50),
        Finish(FinishReason.LENGTH, "length"),
    ]


COMPLETION = recording("llama_cpp_completion_stream.txt")
ERROR_MIDSTREAM = recording("llama_cpp_error_midstream.txt")
RECORDED: list[tuple[str, bytes, list[Event], ErrorFields | None]] = [
    (
        "completion",
        COMPLETION,
        [
            Start("", MODEL),
            TextDelta(" Hello"),
            TextDelta("!"),
            TextDelta(" How can I help?"),
            Usage(input_tokens=13, output_tokens=8),
            Finish(FinishReason.STOP, "eos"),
        ],
        None,
    ),
    (
        "error-midstream",
        ERROR_MIDSTREAM,
        [Start("", MODEL), TextDelta(" Hello")],
        (
            Status.INVALID_ARGUMENT,
            "UPSTREAM_BAD_REQUEST",
            "llama_cpp: the request exceeds the available context size, try increasing it",
            {"provider": "llama_cpp", "http_status": "400",
             "upstream_type": "exceed_context_size_error"},
        ),
    ),
]  # fmt: skip
BODIES = {name: body for name, body, _, _ in RECORDED}


@pytest.mark.parametrize(("name", "body", "expected", "error"), RECORDED, ids=list(BODIES))
def test_recording_decodes_the_same_at_every_split(
    name: str, body: bytes, expected: list[Event], error: ErrorFields | None
) -> None:
    for chunks in splits(body):
        events, raised = decode(LlamaCppCompletionDecoder(MODEL), chunks)
        assert events == expected, chunks
        assert (error_fields(raised) if raised else None) == error, chunks


@pytest.mark.parametrize(
    ("stop_type", "finish"),
    [("eos", FinishReason.STOP), ("word", FinishReason.STOP), ("limit", FinishReason.LENGTH),
     ("none", FinishReason.OTHER)],
)  # fmt: skip
def test_stop_types(stop_type: str, finish: FinishReason) -> None:
    last = {"content": "", "stop": True, "stop_type": stop_type, "tokens_predicted": 3,
            "tokens_evaluated": 2}  # fmt: skip
    events, error = decode(LlamaCppCompletionDecoder(MODEL), [sse(last)])
    assert error is None
    assert events == [Start("", MODEL), Usage(2, 3), Finish(finish, stop_type)]


def sse(*payloads: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (COMPLETION[: COMPLETION.rindex(b"data:")], 'ended before the "stop": true event'),
        (b"", 'ended before the "stop": true event'),
        (b"data: {nope\n\n", "unreadable message event"),
        (b'data: {"stop": false}\n\n', "KeyError('content')"),
    ],
    ids=["truncated", "empty", "bad-json", "no-content"],
)
def test_protocol_errors(body: bytes, message: str) -> None:
    _, error = decode(LlamaCppCompletionDecoder(MODEL), [body])
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert message in error.message


FAST = settings(max_examples=150, deadline=None)


def outcome(chunks: list[bytes]) -> tuple[object, ...]:
    events, error = decode(LlamaCppCompletionDecoder(MODEL), chunks)
    return (*events, error and error_fields(error))


@pytest.mark.parametrize("name", sorted(BODIES))
@FAST
@given(cuts=st.lists(st.integers(min_value=0, max_value=2_000), max_size=30))
def test_any_split_gives_the_same_events(name: str, cuts: list[int]) -> None:
    body = BODIES[name]
    assert outcome(chunked(body, cuts)) == outcome([body])


@pytest.mark.parametrize("name", sorted(BODIES))
@FAST
@given(garbage=st.binary(min_size=1, max_size=200), data=st.data())
def test_corrupted_bytes_end_in_a_gateway_error_or_decode(
    name: str, garbage: bytes, data: st.DataObject
) -> None:
    body = BODIES[name]
    at = data.draw(st.integers(min_value=0, max_value=len(body)))
    _, error = decode(LlamaCppCompletionDecoder(MODEL), [body[:at] + garbage + body[at:]])
    assert error is None or isinstance(error, GatewayError)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            b'{"error":{"code":400,"message":"the request exceeds the available context size, '
            b'try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,'
            b'"n_ctx":4096}}',
            (Status.INVALID_ARGUMENT, "UPSTREAM_BAD_REQUEST",
             "llama_cpp: the request exceeds the available context size, try increasing it",
             {"provider": "llama_cpp", "http_status": "400",
              "upstream_type": "exceed_context_size_error"}),
        ),
        (
            503,
            b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}',
            (Status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "llama_cpp: Loading model",
             {"provider": "llama_cpp", "http_status": "503", "upstream_type": "unavailable_error"}),
        ),
    ],
    ids=["400-context", "503-loading"],
)  # fmt: skip
def test_parse_error(status: int, body: bytes, expected: ErrorFields) -> None:
    assert error_fields(adapter().parse_error(status, {}, body)) == expected
