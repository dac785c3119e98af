"""TGI native adapter (/generate_stream): request bodies, recorded streams
decoded at every split, stream properties, and error mapping. No network."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
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
from sluice.providers.bounds import DEFAULT_MAX_EVENT_BYTES
from sluice.providers.http import HttpClientPool
from sluice.providers.tgi import TGIAdapter, TGISettings, TGIStreamDecoder
from tests.decoding import chunked, decode, network_chunks
from tests.recordings import recording, splits

MODEL = "bigscience/bloom-560m"
URL = "http://localhost:8080/generate_stream"

ErrorFields = tuple[Status, str, str, dict[str, str]]


def adapter(**fields: Any) -> TGIAdapter:
    config = TGISettings.model_validate({"provider": "tgi", "name": MODEL, **fields})
    created = config.create_adapter(HttpClientPool())
    assert isinstance(created, TGIAdapter)
    return created


def completion(prompt: str = "What is Deep Learning?", **fields: Any) -> CompletionRequest:
    return CompletionRequest("tgi", prompt, **fields)


def error_fields(error: GatewayError) -> ErrorFields:
    return error.status, error.reason, error.message, error.metadata


def sse(*payloads: dict[str, Any]) -> bytes:
    # As TGI (axum) writes them: no space after "data:".
    return b"".join(b"data:" + json.dumps(p).encode() + b"\n\n" for p in payloads)


def token(text: str, special: bool = False, **last: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "index": 1,
        "token": {"id": 1, "text": text, "logprob": -0.5, "special": special},
        "generated_text": None,
        "details": None,
    }
    return {**event, **last}


def last(text: str, details: dict[str, Any] | None, special: bool = False) -> dict[str, Any]:
    return token(text, special, generated_text="whole text", details=details)


def tgi_decoder() -> TGIStreamDecoder:
    return TGIStreamDecoder(MODEL)


# --- settings ------------------------------------------------------------------


def test_settings_defaults_aliases_and_operations() -> None:
    built = adapter(
        tgi_api_key="hf_token", tgi_api_base="https://abc.endpoints.huggingface.cloud/"
    ).build(completion())
    assert built.url == "https://abc.endpoints.huggingface.cloud/generate_stream"
    assert built.headers["authorization"] == "Bearer hf_token"
    # Chat routes are refused at config validation: TGI answers completions only.
    assert {op.value for op in TGISettings.operations} == {"llm/v1/completions"}


def test_settings_reject_unknown_keys() -> None:
    with pytest.raises(ValueError, match="organization"):
        TGISettings.model_validate({"provider": "tgi", "name": MODEL, "organization": "x"})


# --- build ---------------------------------------------------------------------


def test_build_minimal_request() -> None:
    built = adapter().build(completion())
    assert built.method == "POST"
    assert built.url == URL
    # No key, no authorization header: a local TGI has no auth.
    assert built.headers == {"content-type": "application/json"}
    assert built.json == {"inputs": "What is Deep Learning?", "parameters": {"details": True}}


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        (GenerationParams(), {}),
        (
            GenerationParams(
                max_tokens=20,
                temperature=0.7,
                top_p=0.95,
                top_k=10,
                stop=("\n\n",),
                seed=42,
                frequency_penalty=0.1,
                # No TGI parameter: dropped.
                presence_penalty=0.5,
                reasoning_budget_tokens=100,
            ),
            {
                "max_new_tokens": 20,
                "temperature": 0.7,
                "top_p": 0.95,
                "top_k": 10,
                "stop": ["\n\n"],
                "seed": 42,
                "frequency_penalty": 0.1,
            },
        ),
        # TGI rejects these values, which mean its defaults: left out.
        (GenerationParams(temperature=0.0, top_p=1.0, top_k=0), {}),
    ],
    ids=["none", "all", "defaults-tgi-rejects"],
)
def test_build_generation_params(generation: GenerationParams, expected: dict[str, Any]) -> None:
    body = adapter().build(completion(generation=generation)).json
    assert body["parameters"] == {**expected, "details": True}


def test_build_refuses_a_suffix() -> None:
    with pytest.raises(GatewayError, match="fill-in-the-middle") as caught:
        adapter().build(completion("def f(", suffix="    return x"))
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "suffix"


def test_build_refuses_other_operations() -> None:
    chat = ChatRequest("tgi", (Message(Role.USER, (TextPart("Hi"),)),))
    with pytest.raises(TypeError, match="llm/v1/chat"):
        adapter().build(chat)


def test_decoder_starts_with_the_configured_model() -> None:
    decoder = adapter().decoder(completion())
    assert decoder.feed(sse(token(" Hi"))) == [Start("", MODEL), TextDelta(" Hi")]


# --- stream decoding: recordings -----------------------------------------------

GENERATE_STREAM = recording("tgi_generate_stream.txt")
# The recording's second half is TGI's OpenAI-compatible stream (test_openai.py).
ERROR_MIDSTREAM = recording("tgi_error_midstream.txt").split(b": ----")[0]

RECORDED: list[tuple[str, bytes, list[Event], ErrorFields | None]] = [
    (
        "tgi_generate_stream.txt",
        GENERATE_STREAM,
        [
            Start("", MODEL),
            TextDelta(" Deep"),
            TextDelta(" Learning"),
            TextDelta(" is"),
            TextDelta(" a"),
            # The last token is the special </s>: no text.
            Usage(input_tokens=6, output_tokens=5),
            Finish(FinishReason.STOP, "eos_token"),
        ],
        None,
    ),
    (
        "tgi_error_midstream.txt",
        ERROR_MIDSTREAM,
        [Start("", MODEL), TextDelta(" Deep")],
        (
            # TGI answers a generation error with HTTP 424.
            Status.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
            "tgi: Request failed during generation: Server error: CUDA out of memory",
            {"provider": "tgi", "http_status": "424", "upstream_type": "generation"},
        ),
    ),
]
BODIES = {name: body for name, body, _, _ in RECORDED}


@pytest.mark.parametrize(("name", "body", "expected", "error"), RECORDED, ids=list(BODIES))
def test_recording_decodes_the_same_at_every_split(
    name: str, body: bytes, expected: list[Event], error: ErrorFields | None
) -> None:
    for chunks in splits(body):
        events, raised = decode(tgi_decoder(), chunks)
        assert events == expected, chunks
        assert (error_fields(raised) if raised else None) == error, chunks


def test_recorded_text_is_the_generated_text() -> None:
    events, _ = decode(tgi_decoder(), [GENERATE_STREAM])
    text = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert text == json.loads(GENERATE_STREAM.split(b"data:")[-1])["generated_text"]


# --- stream decoding: synthetic streams ----------------------------------------


@pytest.mark.parametrize(
    ("details", "usage", "finish"),
    [
        (
            {"finish_reason": "length", "generated_tokens": 20, "seed": None, "input_length": 7},
            Usage(input_tokens=7, output_tokens=20),
            Finish(FinishReason.LENGTH, "length"),
        ),
        (
            {"finish_reason": "stop_sequence", "generated_tokens": 3, "seed": 1, "input_length": 2},
            Usage(input_tokens=2, output_tokens=3),
            Finish(FinishReason.STOP, "stop_sequence"),
        ),
        # Older servers report no prompt length.
        (
            {"finish_reason": "eos_token", "generated_tokens": 3, "seed": None},
            Usage(output_tokens=3, reported=False),
            Finish(FinishReason.STOP, "eos_token"),
        ),
        (
            {"finish_reason": "something_new", "generated_tokens": 3, "input_length": 2},
            Usage(input_tokens=2, output_tokens=3),
            Finish(FinishReason.OTHER, "something_new"),
        ),
        # A server that ignored details=true.
        (None, Usage(reported=False), Finish(FinishReason.OTHER)),
    ],
    ids=["length", "stop-sequence", "no-input-length", "unknown-reason", "no-details"],
)
def test_last_event(details: dict[str, Any] | None, usage: Usage, finish: Finish) -> None:
    events, error = decode(tgi_decoder(), [sse(token("A"), last("!", details))])
    assert error is None
    assert events == [Start("", MODEL), TextDelta("A"), TextDelta("!"), usage, finish]


def test_keep_alive_comments_and_events_after_the_last_are_ignored() -> None:
    details = {"finish_reason": "eos_token", "generated_tokens": 1, "input_length": 1}
    body = b":\n\n" + sse(last("Hi", details)) + b"data:[DONE]\n\n" + sse(token("late"))
    assert decode(tgi_decoder(), [body]) == (
        [Start("", MODEL), TextDelta("Hi"), Usage(1, 1), Finish(FinishReason.STOP, "eos_token")],
        None,
    )


@pytest.mark.parametrize(
    ("error_type", "http_status", "status"),
    [
        ("validation", 422, Status.INVALID_ARGUMENT),
        ("template_error", 422, Status.INVALID_ARGUMENT),
        ("missing_template_variable", 422, Status.INVALID_ARGUMENT),
        ("tool_error", 422, Status.INVALID_ARGUMENT),
        ("generation", 424, Status.UNAVAILABLE),
        ("overloaded", 429, Status.RESOURCE_EXHAUSTED),
        ("incomplete_generation", 500, Status.UNAVAILABLE),
        ("incomplete_generation_stream", 500, Status.UNAVAILABLE),
        ("brand_new", 500, Status.UNAVAILABLE),
    ],
)
def test_error_event_maps_like_its_http_status(
    error_type: str, http_status: int, status: Status
) -> None:
    decoder = tgi_decoder()
    # An error before any other event of its chunk is raised at once.
    with pytest.raises(GatewayError) as caught:
        decoder.feed(sse({"error": "boom", "error_type": error_type}))
    assert caught.value.status is status
    assert caught.value.message == "tgi: boom"
    assert caught.value.metadata == {
        "provider": "tgi",
        "http_status": str(http_status),
        "upstream_type": error_type,
    }


def test_error_after_events_of_its_chunk_is_raised_next() -> None:
    decoder = tgi_decoder()
    events = decoder.feed(
        sse(token("Hi"), {"error": "Model is overloaded", "error_type": "overloaded"})
    )
    assert events == [Start("", MODEL), TextDelta("Hi")]
    with pytest.raises(GatewayError, match="overloaded"):
        decoder.feed(b"")
    with pytest.raises(GatewayError, match="overloaded"):
        decoder.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (GENERATE_STREAM[: GENERATE_STREAM.rindex(b"data:")], "ended before the event with"),
        (b"", "ended before the event with"),
        (b"data:{not json\n\n", "unreadable message event"),
        (b'data:{"generated_text": null}\n\n', "unreadable message event: KeyError('token')"),
        (b"data:[1, 2]\n\n", "unreadable message event"),
        (b"data:\xff\n\n", "not UTF-8"),
    ],
    ids=["truncated", "empty", "bad-json", "no-token", "not-an-object", "not-utf8"],
)
def test_protocol_errors(body: bytes, message: str) -> None:
    _, error = decode(tgi_decoder(), [body])
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert message in error.message


# --- stream properties ---------------------------------------------------------

FAST = settings(max_examples=150, deadline=None)
CUTS = st.lists(st.integers(min_value=0, max_value=1_000), max_size=30)


def outcome(body: bytes, chunks: list[bytes]) -> tuple[object, ...]:
    events, error = decode(tgi_decoder(), chunks)
    return (*events, error and error_fields(error))


@pytest.mark.parametrize("name", sorted(BODIES))
@FAST
@given(cuts=CUTS)
def test_any_split_gives_the_same_events(name: str, cuts: list[int]) -> None:
    body = BODIES[name]
    assert outcome(body, chunked(body, cuts)) == outcome(body, [body])


@pytest.mark.parametrize("name", sorted(BODIES))
@FAST
@given(data=st.data())
def test_a_cut_short_body_is_an_error(name: str, data: st.DataObject) -> None:
    body = BODIES[name].rstrip()
    end = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    cut = outcome(body, [body[:end]])
    assert cut[-1] is not None
    assert cut[-1][0] is Status.UNAVAILABLE  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(BODIES))
@FAST
@given(garbage=st.binary(min_size=1, max_size=200), data=st.data())
def test_corrupted_bytes_end_in_a_gateway_error_or_decode(
    name: str, garbage: bytes, data: st.DataObject
) -> None:
    body = BODIES[name]
    at = data.draw(st.integers(min_value=0, max_value=len(body)))
    # decode() lets only GatewayError through: any other exception fails here.
    _, error = decode(tgi_decoder(), [body[:at] + garbage + body[at:]])
    assert error is None or error.status is Status.UNAVAILABLE


@FAST
@given(
    event=st.dictionaries(
        st.sampled_from(["token", "generated_text", "details", "error", "error_type"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=5)
        | st.fixed_dictionaries({"text": st.text(max_size=3), "special": st.booleans()}),
    )
)
def test_any_json_event_decodes_or_is_a_gateway_error(event: dict[str, Any]) -> None:
    _, error = decode(tgi_decoder(), [sse(event)])
    # An error event maps to its own status; anything else unreadable is UNAVAILABLE.
    assert error is None or "error" in event or error.status is Status.UNAVAILABLE


def test_an_oversize_event_is_refused() -> None:
    body = b"data:{" + b"x" * DEFAULT_MAX_EVENT_BYTES
    events, error = decode(tgi_decoder(), network_chunks(body))
    assert events == []
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_EVENT_TOO_LARGE")


# --- HTTP errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "retry_after"),
    [
        (
            422,
            {"x-request-id": "req-1"},
            b'{"error":"Input validation error: `inputs` must have less than 1024 tokens. '
            b'Given: 2048","error_type":"validation"}',
            (
                Status.INVALID_ARGUMENT,
                "UPSTREAM_BAD_REQUEST",
                "tgi: Input validation error: `inputs` must have less than 1024 tokens. Given: 2048",
                {
                    "provider": "tgi",
                    "http_status": "422",
                    "upstream_type": "validation",
                    "upstream_request_id": "req-1",
                },
            ),
            None,
        ),
        (
            429,
            {"retry-after": "2"},
            b'{"error":"Model is overloaded","error_type":"overloaded"}',
            (
                Status.RESOURCE_EXHAUSTED,
                "UPSTREAM_RATE_LIMITED",
                "tgi: Model is overloaded",
                {"provider": "tgi", "http_status": "429", "upstream_type": "overloaded"},
            ),
            2.0,
        ),
        (
            424,
            {},
            b'{"error":"Request failed during generation: Server error: CUDA out of memory",'
            b'"error_type":"generation"}',
            (
                Status.UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                "tgi: Request failed during generation: Server error: CUDA out of memory",
                {"provider": "tgi", "http_status": "424", "upstream_type": "generation"},
            ),
            None,
        ),
        (
            401,
            {},
            b'{"error":"Authorization header is correct, but the token seems invalid"}',
            (
                Status.INTERNAL,
                "UPSTREAM_AUTH_FAILED",
                "tgi rejected the gateway's credentials (HTTP 401)",
                {"provider": "tgi", "http_status": "401"},
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
                "tgi: <html>" + "x" * 494,
                {"provider": "tgi", "http_status": "502"},
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
                "tgi: HTTP 503 with an empty body",
                {"provider": "tgi", "http_status": "503"},
            ),
            None,
        ),
    ],
    ids=["422-validation", "429-retry-after", "424-generation", "401", "non-json", "empty"],
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
