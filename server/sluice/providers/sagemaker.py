"""Amazon SageMaker real-time endpoints (SageMaker Runtime).

Chat and completions call InvokeEndpointWithResponseStream
(`POST /endpoints/{endpoint_name}/invocations-response-stream`); its answer
is an AWS eventstream (eventstream.py) of `PayloadPart` events whose bytes
are the container's own output stream, cut anywhere. A `ModelStreamError` or
`InternalStreamFailure` exception frame replaces the rest of the stream.
Embeddings call InvokeEndpoint (`POST /endpoints/{endpoint_name}/invocations`),
which answers the container's JSON body as is. Every request is SigV4-signed
(signing name "sagemaker") over the exact body bytes sent; the inference
component, if set, goes in `X-Amzn-SageMaker-Inference-Component`.

What the container speaks is `payload_style`:
- `tgi`: Hugging Face TGI (and LMI with `tgi_compat`): `{"inputs",
  "parameters", "stream": true}`, answered with TGI's `/generate_stream`
  SSE (tgi.py). Completions only: a prompt is TGI's input, and a chat has no
  place in it. Embeddings: `{"inputs": [...]}` (TEI).
- `openai`: the OpenAI-compatible messages API of LMI, vLLM and TGI
  containers: OpenAI's chat and completions bodies with `"stream": true`
  (openai.py, `name` sent as `model`), answered with OpenAI's SSE chunks;
  embeddings with OpenAI's embeddings body and answer.
- `jsonlines`: LMI's JSON lines (lmi.py), as JumpStart deploys it.
  Completions only. Embeddings: `{"inputs": [...]}`.
An embeddings answer other than OpenAI's is a list of vectors (TEI, LMI) or
`{"embedding": [vectors]}` (JumpStart).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
from pydantic import Field, model_validator

from sluice import errors
from sluice.domain import (
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Event,
    Operation,
    Request,
    Start,
    Usage,
)
from sluice.providers.aws import AwsCredentials, SigV4Signer, aws_json_request
from sluice.providers.base import EmbeddingDecoder, ErrorFields, StreamDecoder
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.eventstream import EventStreamDecoder
from sluice.providers.features import Feature
from sluice.providers.lmi import LMIJsonLinesDecoder, lmi_parameters
from sluice.providers.openai import OpenAICompatibleAdapter, OpenAIEmbeddingDecoder
from sluice.providers.settings import ProviderSettings
from sluice.providers.tgi import TGIStreamDecoder, generate_parameters
from sluice.providers.wire import JSON, MAX_ERROR_TEXT

if TYPE_CHECKING:
    from collections.abc import Mapping

    from botocore.eventstream import EventStreamMessage

    from sluice.errors import GatewayError
    from sluice.providers.http import UpstreamClient, UpstreamRequest

PROVIDER = "sagemaker"
SIGNING_NAME = "sagemaker"  # the service model's signingName (the host says runtime.sagemaker)

PayloadStyle = Literal["tgi", "openai", "jsonlines"]

# What each payload style answers (see the module docstring).
_OPERATIONS: Mapping[str, frozenset[Operation]] = {
    "tgi": frozenset({Operation.COMPLETION, Operation.EMBEDDING}),
    "jsonlines": frozenset({Operation.COMPLETION, Operation.EMBEDDING}),
    "openai": frozenset(Operation),
}


class SageMakerAdapter(OpenAICompatibleAdapter):
    def __init__(
        self,
        settings: SageMakerSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        endpoint = f"{settings.base_url}/endpoints/{settings.endpoint_name}"
        stream_url = f"{endpoint}/invocations-response-stream"
        headers = {"content-type": "application/json"}
        if settings.inference_component:
            headers["x-amzn-sagemaker-inference-component"] = settings.inference_component
        self._headers: dict[str, str] = headers
        super().__init__(
            client,
            provider=PROVIDER,
            model=settings.name,
            urls={
                Operation.CHAT: stream_url,
                Operation.COMPLETION: stream_url,
                Operation.EMBEDDING: f"{endpoint}/invocations",
            },
            headers=headers,
            max_tokens_field="max_tokens",
            connect_timeout=connect_timeout,
            bounds=bounds,
        )
        self._style = settings.payload_style
        assert settings.region is not None  # checked by the settings
        self._signer = SigV4Signer(PROVIDER, SIGNING_NAME, settings.region, settings)

    def build(self, request: Request) -> UpstreamRequest:
        if self._style == "openai":
            upstream = super().build(request)
            return aws_json_request(upstream.url, dict(upstream.json), self._headers, self._signer)
        if isinstance(request, EmbeddingRequest):
            body: JSON = {"inputs": list(request.inputs)}
        elif isinstance(request, CompletionRequest):
            if request.suffix:
                raise errors.invalid_argument(
                    "suffix", f"sagemaker payload_style {self._style} has no fill-in-the-middle"
                )
            parameters = (
                generate_parameters(request.generation)
                if self._style == "tgi"
                else lmi_parameters(request.generation)
            )
            body = {"inputs": request.prompt, "parameters": parameters, "stream": True}
        else:
            # Config validation admits chat routes with payload_style openai only.
            raise TypeError(f"sagemaker payload_style {self._style} cannot answer chat")
        return aws_json_request(self._urls[request.operation], body, self._headers, self._signer)

    def decoder(self, request: Request) -> StreamDecoder:
        if isinstance(request, EmbeddingRequest):
            if self._style == "openai":
                return OpenAIEmbeddingDecoder(PROVIDER)
            return SageMakerEmbeddingDecoder(self._model)
        container: StreamDecoder
        if self._style == "openai":
            container = super().decoder(request)
        elif self._style == "tgi":
            container = TGIStreamDecoder(self._model, PROVIDER)
        else:
            container = LMIJsonLinesDecoder(self._model, PROVIDER)
        return SageMakerStreamDecoder(container)

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        # "ModelError" or "ModelError:http://internal.amazon.com/coral/..."
        error_type = headers.get("x-amzn-errortype", "").partition(":")[0]
        request_id = headers.get("x-amzn-requestid", "")
        if not isinstance(payload, dict):
            return ErrorFields(type=error_type, request_id=request_id)
        error_type = error_type or str(payload.get("__type") or "").rpartition("#")[2]
        message = str(payload.get("Message") or payload.get("message") or "")
        original = payload.get("OriginalStatusCode")
        if error_type != "ModelError" or not isinstance(original, int):
            return ErrorFields(message, error_type, request_id)
        # The container refused: its own words (AWS's Message names the
        # account and log stream), and its 4xx status when the request was at
        # fault. A 401/403 of the container is no failure of Sluice's AWS
        # credentials: it stays the ModelError's 424.
        said = str(payload.get("OriginalMessage") or message)[:MAX_ERROR_TEXT]
        refused = 400 <= original < 500 and original not in (401, 403)
        return ErrorFields(
            f"the model answered {original}: {said}",
            error_type,
            request_id,
            status=original if refused else None,
        )


class SageMakerSettings(ProviderSettings, AwsCredentials):
    """`name` names the model (prices, telemetry; sent as `model` in
    payload_style openai, which vLLM checks); the endpoint is `endpoint_name`."""

    default_api_base: ClassVar[str] = "https://runtime.sagemaker.{region}.amazonaws.com"
    adapter = SageMakerAdapter

    provider: Literal["sagemaker"]
    endpoint_name: str = Field(max_length=63, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
    payload_style: PayloadStyle = "tgi"
    inference_component: str | None = Field(
        default=None, max_length=63, pattern=r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$"
    )
    # region, aws_access_key_id, aws_secret_access_key, aws_session_token
    # (AwsCredentials): without keys, the standard AWS chain applies.

    @model_validator(mode="after")
    def _check_auth_and_region(self) -> SageMakerSettings:
        if self.api_key:
            raise ValueError("sagemaker takes AWS credentials, not api_key")
        if not self.region:
            raise ValueError("region is required to sign requests (SigV4)")
        return self

    # Vary by payload style, though ProviderSettings declares class attributes.
    @property
    def operations(self) -> frozenset[Operation]:  # type: ignore[override]
        return _OPERATIONS[self.payload_style]

    @property
    def features(self) -> frozenset[Feature]:  # type: ignore[override]
        if self.payload_style != "openai":
            return frozenset()
        # Chat goes over the OpenAI wire format, which carries these as OpenAI does.
        return frozenset({Feature.JSON_OBJECT, Feature.JSON_SCHEMA, Feature.PROVIDER_OPTIONS})

    def operations_hint(self) -> str:
        return f"with payload_style {self.payload_style}; chat needs payload_style openai"

    @property
    def base_url(self) -> str:
        return (self.api_base or self.default_api_base.format(region=self.region)).rstrip("/")


# --- response ------------------------------------------------------------------

# ModelStreamError codes (service model): the model took longer than SageMaker
# allows -- SageMaker gave up, as an upstream answering 504 does -- or the
# connection to the container broke. Both are the model's failure, as the
# ModelError (424) of InvokeEndpoint is.
_MODEL_STREAM_ERROR_STATUS = {"ModelInvocationTimeExceeded": 504}
_MODEL_ERROR_STATUS = 424
# InternalStreamFailure is a fault of SageMaker's own ("try your request again").
_INTERNAL_FAILURE_STATUS = 500


class SageMakerStreamDecoder(EventStreamDecoder):
    """Sans-I/O: InvokeEndpointWithResponseStream bytes in, domain events
    out. The `PayloadPart` bytes go, in order, to the decoder of the
    container's own stream, whose events and end are the answer's."""

    provider = PROVIDER

    def __init__(self, container: StreamDecoder) -> None:
        super().__init__()
        self._container = container

    def bound(self, bounds: BodyBounds) -> None:
        super().bound(bounds)
        self._container.bound(bounds)

    def _end_of_body(self) -> list[Event]:
        return self._container.close()

    def _handle(self, frame: EventStreamMessage, events: list[Event]) -> None:
        headers = frame.headers
        message_type = headers.get(":message-type")
        if message_type in ("exception", "error"):
            raise _frame_error(headers, frame.payload)
        if message_type != "event":
            raise ValueError(f"unknown message type {message_type!r}")
        if headers.get(":event-type") != "PayloadPart":
            return  # an event type added later carries nothing for us
        events += self._container.feed(frame.payload)
        if self._container.failure is not None:
            raise self._container.failure
        self.done = self._container.done


def _frame_error(headers: Mapping[str, Any], payload: bytes) -> GatewayError:
    """The error of an `exception` frame (modeled, JSON payload) or an
    `error` frame (unmodeled, all in headers)."""
    if headers.get(":message-type") == "error":
        error_type = str(headers.get(":error-code") or "")
        message = str(headers.get(":error-message") or "")
        status = _INTERNAL_FAILURE_STATUS
    else:
        error_type = str(headers.get(":exception-type") or "")
        body = _exception_body(payload)
        message = str(body.get("Message") or body.get("message") or "")
        if error_type == "ModelStreamError":
            code = str(body.get("ErrorCode") or "")
            status = _MODEL_STREAM_ERROR_STATUS.get(code, _MODEL_ERROR_STATUS)
            message = f"{code}: {message}" if code else message
        else:
            status = _INTERNAL_FAILURE_STATUS
    return errors.upstream_http_error(
        PROVIDER, status, message or error_type or "error in stream", error_type=error_type
    )


def _exception_body(payload: bytes) -> JSON:
    try:
        body = orjson.loads(payload)
    except ValueError:
        return {"Message": payload.decode("utf-8", "replace")[:MAX_ERROR_TEXT]}
    return body if isinstance(body, dict) else {}


class SageMakerEmbeddingDecoder(EmbeddingDecoder):
    """An InvokeEndpoint embeddings answer: a list of vectors (TEI, LMI) or
    `{"embedding": [vectors]}` (JumpStart). It counts no tokens."""

    def __init__(self, model: str) -> None:
        super().__init__(PROVIDER)
        self._model = model

    def _read(self, payload: Any) -> tuple[Start, Embeddings, Usage]:
        vectors = payload["embedding"] if isinstance(payload, dict) else payload
        embeddings = tuple(tuple(vector) for vector in vectors)
        return Start("", self._model), Embeddings(embeddings), Usage(reported=False)
