"""SageMaker adapter: settings by payload style, SigV4-signed requests per
style, the eventstream decoder over each container's stream on recorded
samples (any split of the body and any cut of the container's stream into
PayloadParts gives the same events), and the exact error mapping of HTTP
errors and mid-stream exception frames."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sluice.config.schema import RouteConfig
from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
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
from sluice.errors import GatewayError, Reason, Status
from sluice.providers.base import StreamDecoder
from sluice.providers.bounds import BodyBounds
from sluice.providers.http import HttpClientPool
from sluice.providers.lmi import LMIJsonLinesDecoder
from sluice.providers.openai import OpenAIChatDecoder, OpenAICompletionDecoder
from sluice.providers.sagemaker import (
    SageMakerAdapter,
    SageMakerEmbeddingDecoder,
    SageMakerSettings,
    SageMakerStreamDecoder,
)
from sluice.providers.tgi import TGIStreamDecoder
from tests import sagemaker_fixtures
from tests.decoding import chunked, decode
from tests.eventstream import frame
from tests.recordings import recording

NOW = datetime.datetime(2025, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
FAST = settings(max_examples=100, deadline=None)
CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=30)
KEYS = {"region": "us-east-1", "aws_access_key_id": "AKID", "aws_secret_access_key": "SECRET"}


def model_settings(**overrides: Any) -> SageMakerSettings:
    fields = {"provider": "sagemaker", "name": "llama-3-8b", "endpoint_name": "my-endpoint"}
    return SageMakerSettings.model_validate({**fields, **KEYS, **overrides})


def adapter(**overrides: Any) -> SageMakerAdapter:
    pool = HttpClientPool()  # build() sends nothing
    created = model_settings(**overrides).create_adapter(pool)
    assert isinstance(created, SageMakerAdapter)
    return created


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW)


def completion(**fields: Any) -> CompletionRequest:
    return CompletionRequest(route="r", prompt="What is Deep Learning?", **fields)


def chat() -> ChatRequest:
    return ChatRequest(route="r", messages=(Message(Role.USER, (TextPart("hi"),)),))


# --- settings ------------------------------------------------------------------


def test_payload_style_defaults_to_tgi_and_api_base_to_the_region() -> None:
    configured = model_settings()
    assert configured.payload_style == "tgi"
    assert configured.base_url == "https://runtime.sagemaker.us-east-1.amazonaws.com"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"region": None}, "region is required"),
        ({"api_key": "k"}, "not api_key"),
        ({"endpoint_name": "bad/name"}, "endpoint_name"),
        ({"endpoint_name": "x" * 64}, "endpoint_name"),
        ({"inference_component": "bad name"}, "inference_component"),
        ({"payload_style": "sse"}, "payload_style"),
        ({"aws_access_key_id": "AKID", "aws_secret_access_key": None}, "together"),
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        model_settings(**overrides)


@pytest.mark.parametrize(
    ("style", "route_type", "answers"),
    [
        ("tgi", "llm/v1/completions", True),
        ("tgi", "llm/v1/embeddings", True),
        ("tgi", "llm/v1/chat", False),
        ("jsonlines", "llm/v1/completions", True),
        ("jsonlines", "llm/v1/chat", False),
        ("openai", "llm/v1/chat", True),
        ("openai", "llm/v1/completions", True),
        ("openai", "llm/v1/embeddings", True),
    ],
)
def test_the_payload_style_says_what_a_route_may_ask(
    style: str, route_type: str, answers: bool
) -> None:
    model = {"provider": "sagemaker", "name": "m", "endpoint_name": "e", "payload_style": style}
    route = {"name": "r", "route_type": route_type, "model": {**model, **KEYS}}
    if answers:
        RouteConfig.model_validate(route)
        return
    with pytest.raises(ValidationError) as caught:
        RouteConfig.model_validate(route)
    assert f"with payload_style {style}; chat needs payload_style openai" in str(caught.value)


def test_only_the_openai_style_takes_structured_output_and_options() -> None:
    assert not model_settings().features
    assert {f.value for f in model_settings(payload_style="openai").features} == {
        "response_format",
        "response_format.schema",
        "provider_options",
    }


# --- requests ------------------------------------------------------------------


def resign(url: str, content: bytes, headers: dict[str, str]) -> str:
    """botocore's own signature of the request (at the frozen time)."""
    request = AWSRequest(method="POST", url=url, data=content, headers=headers)
    SigV4Auth(Credentials("AKID", "SECRET"), "sagemaker", "us-east-1").add_auth(request)
    authorization: str = request.headers["Authorization"]
    return authorization


@pytest.mark.usefixtures("frozen_clock")
def test_a_tgi_completion_streams_signed_from_the_endpoint() -> None:
    built = adapter(inference_component="ic-llama").build(
        completion(generation=GenerationParams(max_tokens=20, temperature=0.5))
    )
    assert built.url == (
        "https://runtime.sagemaker.us-east-1.amazonaws.com"
        "/endpoints/my-endpoint/invocations-response-stream"
    )
    assert built.json == {
        "inputs": "What is Deep Learning?",
        "parameters": {"max_new_tokens": 20, "temperature": 0.5, "details": True},
        "stream": True,
    }
    assert built.content == json.dumps(built.json, separators=(",", ":")).encode()
    sent = {"content-type": "application/json", "x-amzn-sagemaker-inference-component": "ic-llama"}
    assert built.headers["authorization"] == resign(built.url, built.content, sent)
    assert "/us-east-1/sagemaker/aws4_request" in built.headers["authorization"]
    assert built.headers["x-amzn-sagemaker-inference-component"] == "ic-llama"
    assert "x-amzn-sagemaker-inference-component" in built.headers["authorization"]


@pytest.mark.usefixtures("frozen_clock")
def test_a_jsonlines_completion_asks_in_lmi_names() -> None:
    built = adapter(payload_style="jsonlines").build(
        completion(generation=GenerationParams(max_tokens=20, top_p=0.9, stop=("\n",)))
    )
    assert built.json == {
        "inputs": "What is Deep Learning?",
        "parameters": {
            "max_new_tokens": 20,
            "top_p": 0.9,
            "stop_sequences": ["\n"],
            "do_sample": True,
            "details": True,
        },
        "stream": True,
    }
    assert "x-amzn-sagemaker-inference-component" not in built.headers


@pytest.mark.usefixtures("frozen_clock")
def test_the_openai_style_sends_openai_bodies_signed() -> None:
    built = adapter(payload_style="openai").build(chat())
    assert built.url.endswith("/endpoints/my-endpoint/invocations-response-stream")
    assert built.json == {
        "model": "llama-3-8b",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert built.content is not None
    assert built.headers["authorization"] == resign(
        built.url, built.content, {"content-type": "application/json"}
    )


@pytest.mark.parametrize(
    ("style", "body"),
    [
        ("tgi", {"inputs": ["a", "b"]}),
        ("jsonlines", {"inputs": ["a", "b"]}),
        ("openai", {"model": "llama-3-8b", "input": ["a", "b"], "encoding_format": "float"}),
    ],
)
@pytest.mark.usefixtures("frozen_clock")
def test_embeddings_invoke_the_endpoint(style: str, body: dict[str, Any]) -> None:
    built = adapter(payload_style=style).build(EmbeddingRequest(route="r", inputs=("a", "b")))
    assert built.url.endswith("/endpoints/my-endpoint/invocations")
    assert built.json == body
    assert built.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")


def test_a_suffix_is_refused_naming_the_field() -> None:
    with pytest.raises(GatewayError, match="fill-in-the-middle") as caught:
        adapter().build(completion(suffix="end"))
    assert (caught.value.status, caught.value.field) == (Status.INVALID_ARGUMENT, "suffix")


# --- streams -------------------------------------------------------------------

MODEL = "llama-3-8b"
CONTAINERS: dict[str, Callable[[], StreamDecoder]] = {
    "sagemaker_tgi_stream.bin": lambda: TGIStreamDecoder(MODEL, "sagemaker"),
    "sagemaker_model_stream_error.bin": lambda: TGIStreamDecoder(MODEL, "sagemaker"),
    "sagemaker_openai_chat_stream.bin": lambda: OpenAIChatDecoder("sagemaker"),
    "sagemaker_internal_stream_failure.bin": lambda: OpenAIChatDecoder("sagemaker"),
    "sagemaker_openai_completions_stream.bin": lambda: OpenAICompletionDecoder("sagemaker"),
    "sagemaker_jsonlines_stream.bin": lambda: LMIJsonLinesDecoder(MODEL, "sagemaker"),
    "sagemaker_jsonlines_error_midstream.bin": lambda: LMIJsonLinesDecoder(MODEL, "sagemaker"),
}


def outcome(name: str, chunks: list[bytes]) -> tuple[object, ...]:
    events, error = decode(SageMakerStreamDecoder(CONTAINERS[name]()), chunks)
    return (*events, error and (error.status, error.reason, error.message))


def test_the_recorded_samples_are_what_the_fixture_builder_makes() -> None:
    for name, body in sagemaker_fixtures.samples().items():
        assert recording(name) == body, name


def test_a_tgi_stream_decodes_to_its_tokens_and_details() -> None:
    assert outcome("sagemaker_tgi_stream.bin", [recording("sagemaker_tgi_stream.bin")]) == (
        Start("", MODEL),
        TextDelta(" Deep"),
        TextDelta(" Learning"),
        TextDelta(" is"),
        TextDelta(" a"),
        Usage(input_tokens=6, output_tokens=5),
        Finish(FinishReason.STOP, "eos_token"),
        None,
    )


def test_a_jsonlines_stream_decodes_to_its_tokens_and_details() -> None:
    name = "sagemaker_jsonlines_stream.bin"
    assert outcome(name, [recording(name)]) == (
        Start("", MODEL),
        TextDelta("Deep "),
        TextDelta(" Learning"),
        TextDelta(" is"),
        TextDelta(" field."),
        Usage(output_tokens=4, reported=False),
        Finish(FinishReason.LENGTH, "length"),
        None,
    )


@pytest.mark.parametrize(
    ("name", "text", "status", "message"),
    [
        (
            "sagemaker_model_stream_error.bin",
            " Deep Learning",
            Status.DEADLINE_EXCEEDED,
            "sagemaker: ModelInvocationTimeExceeded: The model failed to finish sending the "
            "response within the timeout period allowed by Amazon SageMaker AI.",
        ),
        (
            "sagemaker_internal_stream_failure.bin",
            "Okay",
            Status.UNAVAILABLE,
            "sagemaker: The stream processing failed because of an unknown error, exception "
            "or failure. Try your request again.",
        ),
        (
            "sagemaker_jsonlines_error_midstream.bin",
            "Deep  Learning is",
            Status.UNAVAILABLE,
            "sagemaker: generation failed",
        ),
    ],
)
def test_an_error_mid_stream_ends_the_answer_with_its_status(
    name: str, text: str, status: Status, message: str
) -> None:
    events, error = decode(SageMakerStreamDecoder(CONTAINERS[name]()), [recording(name)])
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == text
    assert not any(isinstance(e, Finish) for e in events)
    assert error is not None
    assert (error.status, error.message) == (status, message)
    assert error.metadata["provider"] == "sagemaker"


def exception_frame(kind: str, payload: dict[str, str]) -> bytes:
    return sagemaker_fixtures.exception(kind, payload)


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (
            exception_frame("ModelStreamError", {"Message": "reset", "ErrorCode": "StreamBroken"}),
            Status.UNAVAILABLE,
            Reason.UPSTREAM_UNAVAILABLE,
        ),
        (
            exception_frame(
                "ModelStreamError", {"Message": "slow", "ErrorCode": "ModelInvocationTimeExceeded"}
            ),
            Status.DEADLINE_EXCEEDED,
            Reason.UPSTREAM_HTTP_TIMEOUT,
        ),
        (
            exception_frame("InternalStreamFailure", {"Message": "retry"}),
            Status.UNAVAILABLE,
            Reason.UPSTREAM_UNAVAILABLE,
        ),
        (
            frame({":message-type": "error", ":error-code": "X", ":error-message": "m"}, b""),
            Status.UNAVAILABLE,
            Reason.UPSTREAM_UNAVAILABLE,
        ),
    ],
)
def test_exception_frames_map_exactly(body: bytes, status: Status, reason: Reason) -> None:
    _events, error = decode(SageMakerStreamDecoder(TGIStreamDecoder(MODEL, "sagemaker")), [body])
    assert error is not None
    assert (error.status, error.reason) == (status, reason)


def test_unknown_event_types_are_skipped() -> None:
    other = frame({":event-type": "Later", ":message-type": "event"}, b"{}")
    body = other + recording("sagemaker_tgi_stream.bin")
    name = "sagemaker_tgi_stream.bin"
    assert outcome(name, [body]) == outcome(name, [recording(name)])


@pytest.mark.parametrize("name", sorted(CONTAINERS))
@FAST
@given(cuts=CUTS)
def test_any_split_of_the_body_gives_the_same_events(name: str, cuts: list[int]) -> None:
    body = recording(name)
    assert outcome(name, chunked(body, cuts)) == outcome(name, [body])


CONTAINER_STREAMS = {
    "sagemaker_tgi_stream.bin": (recording("tgi_generate_stream.txt"), TGIStreamDecoder),
    "sagemaker_jsonlines_stream.bin": (sagemaker_fixtures.lmi_lines(), LMIJsonLinesDecoder),
}


@pytest.mark.parametrize("name", sorted(CONTAINER_STREAMS))
@FAST
@given(cuts=CUTS)
def test_any_cut_of_the_container_stream_into_parts_gives_the_same_events(
    name: str, cuts: list[int]
) -> None:
    # SageMaker may cut the container's writes anywhere between PayloadParts.
    stream, _container = CONTAINER_STREAMS[name]
    body = b"".join(sagemaker_fixtures.payload_part(part) for part in chunked(stream, cuts))
    assert outcome(name, [body]) == outcome(name, [recording(name)])


@pytest.mark.parametrize("name", sorted(CONTAINERS))
@FAST
@given(data=st.data())
def test_a_cut_short_body_is_an_error_never_a_shorter_answer(
    name: str, data: st.DataObject
) -> None:
    body = recording(name)
    end = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    cut = outcome(name, [body[:end]])
    whole = outcome(name, [body])
    if cut[-1] is None:
        assert cut == whole  # only OpenAI's [DONE] may go missing
    else:
        assert cut[-1][0] in (Status.UNAVAILABLE, whole[-1] and whole[-1][0])  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(CONTAINERS))
@FAST
@given(garbage=st.binary(min_size=1, max_size=200), data=st.data())
def test_corrupted_bytes_end_in_a_gateway_error_or_decode(
    name: str, garbage: bytes, data: st.DataObject
) -> None:
    body = recording(name)
    at = data.draw(st.integers(min_value=0, max_value=len(body)))
    _events, error = decode(SageMakerStreamDecoder(CONTAINERS[name]()), [body[:at] + garbage])
    assert error is None or error.status in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED)


def test_an_oversized_payload_part_is_refused() -> None:
    decoder = SageMakerStreamDecoder(TGIStreamDecoder(MODEL, "sagemaker"))
    decoder.bound(BodyBounds(event=100, response=1000))
    _events, error = decode(decoder, [sagemaker_fixtures.payload_part(b"data:" + b"x" * 200)])
    assert error is not None
    assert error.reason is Reason.UPSTREAM_EVENT_TOO_LARGE


# --- HTTP errors and embeddings ------------------------------------------------


def error_of(status: int, error_type: str, body: dict[str, Any]) -> GatewayError:
    headers = {"x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/x/"}
    headers["x-amzn-requestid"] = "req-1"
    return adapter().parse_error(status, headers, json.dumps(body).encode())


def test_a_model_error_of_a_refused_request_is_the_callers_bad_request() -> None:
    raw = recording("sagemaker_model_error_response.txt")
    body = json.loads(raw.partition(b"\r\n\r\n")[2])
    error = error_of(424, "ModelError", body)
    assert error.status is Status.INVALID_ARGUMENT
    assert error.message == (
        'sagemaker: the model answered 422: {"error":"Input validation error: `temperature` '
        'must be strictly positive","error_type":"validation"}'
    )
    # AWS's Message names the account and its logs: never passed on.
    assert "111122223333" not in error.message
    assert error.metadata["upstream_type"] == "ModelError"
    assert error.metadata["upstream_request_id"] == "req-1"


@pytest.mark.parametrize(
    ("status", "error_type", "body", "expected"),
    [
        (424, "ModelError", {"Message": "m", "OriginalStatusCode": 500}, Status.UNAVAILABLE),
        # The container's 401 is no failure of Sluice's AWS credentials.
        (424, "ModelError", {"Message": "m", "OriginalStatusCode": 401}, Status.UNAVAILABLE),
        (424, "ModelError", {"Message": "m"}, Status.UNAVAILABLE),
        (400, "ValidationError", {"Message": "Endpoint e not found."}, Status.INVALID_ARGUMENT),
        (429, "ModelNotReadyException", {"Message": "loading"}, Status.RESOURCE_EXHAUSTED),
        (530, "InternalDependencyException", {"Message": "m"}, Status.UNAVAILABLE),
        (500, "InternalFailure", {"Message": "m"}, Status.UNAVAILABLE),
        (503, "ServiceUnavailable", {"Message": "m"}, Status.UNAVAILABLE),
        (403, "AccessDeniedException", {"message": "denied"}, Status.INTERNAL),
    ],
)
def test_http_errors_map_by_the_service_models_statuses(
    status: int, error_type: str, body: dict[str, Any], expected: Status
) -> None:
    error = error_of(status, error_type, body)
    assert error.status is expected
    assert error.metadata["upstream_type"] == error_type


@pytest.mark.parametrize(
    ("payload", "vectors"),
    [
        ([[0.0, 1.0, 2.0]], ((0.0, 1.0, 2.0),)),
        ({"embedding": [[0.5, 1], [2, 3.5]]}, ((0.5, 1), (2, 3.5))),
    ],
)
def test_embeddings_answers_of_either_shape(payload: Any, vectors: Any) -> None:
    decoder = SageMakerEmbeddingDecoder(MODEL)
    decoder.feed(json.dumps(payload).encode())
    assert decoder.close() == [
        Start("", MODEL),
        Embeddings(vectors),
        Usage(reported=False),
        Finish(FinishReason.STOP),
    ]


def test_an_embeddings_answer_of_another_shape_is_a_protocol_error() -> None:
    decoder = SageMakerEmbeddingDecoder(MODEL)
    decoder.feed(b'{"vectors": []}')
    with pytest.raises(GatewayError, match="unreadable") as caught:
        decoder.close()
    assert caught.value.reason is Reason.UPSTREAM_PROTOCOL_ERROR
