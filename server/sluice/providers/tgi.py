"""Hugging Face text-generation-inference, native API (`POST /generate_stream`).

(TGI's OpenAI-compatible `/v1` is provider `openai` with an `api_base`.)

Completions only. The stream is SSE written `data:{...}` (no space after the
colon, no event names, no [DONE]): one event per token,
`{"token": {"text", "special", ...}, "generated_text": null, "details": null}`;
the last event carries the whole `generated_text` and, since the request
asks for them, `details`: finish reason, generated token count and (newer
servers) the prompt's `input_length`. An error after HTTP 200 is an event
`{"error": "<message>", "error_type": "<kind>"}`.

TGI has no response id (Start has id "") and no model name in the stream
(Start names the configured model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson

from sluice import errors
from sluice.domain import (
    CompletionRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    Operation,
    Request,
    Start,
    TextDelta,
    Usage,
)
from sluice.providers.base import ErrorFields, HttpAdapter
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.http import UpstreamRequest
from sluice.providers.settings import ProviderSettings
from sluice.providers.sse import SSEStreamDecoder
from sluice.providers.wire import JSON, json_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sluice.providers.http import UpstreamClient
    from sluice.providers.sse import SSEEvent

PROVIDER = "tgi"


class TGIAdapter(HttpAdapter):
    provider = PROVIDER

    def __init__(
        self,
        settings: TGISettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(client, connect_timeout=connect_timeout, bounds=bounds)
        self._model = settings.name
        self._url = f"{settings.base_url}/generate_stream"
        # A local server has no auth; Inference Endpoints take an HF token.
        self._headers = json_headers(bearer=settings.key)

    def build(self, request: Request) -> UpstreamRequest:
        if not isinstance(request, CompletionRequest):
            # Config validation admits completion routes only (`operations`).
            raise TypeError(f"tgi cannot answer {request.operation.value}")
        if request.suffix:
            raise errors.invalid_argument("suffix", "tgi has no fill-in-the-middle suffix")
        body = {"inputs": request.prompt, "parameters": generate_parameters(request.generation)}
        return UpstreamRequest(self._url, body, self._headers)

    def decoder(self, request: Request) -> TGIStreamDecoder:
        return TGIStreamDecoder(self._model)

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        message, error_type = _describe(payload) if isinstance(payload, dict) else ("", "")
        # Inference Endpoints send a request id; a bare server does not.
        return ErrorFields(message, error_type, headers.get("x-request-id", ""))


class TGISettings(ProviderSettings):
    operations: ClassVar[frozenset[Operation]] = frozenset({Operation.COMPLETION})
    # The server root (TGI's default port); Inference Endpoints have their own URL.
    default_api_base: ClassVar[str] = "http://localhost:8080"
    adapter = TGIAdapter
    mlflow_names = ("huggingface-text-generation-inference",)

    provider: Literal["tgi"]


def generate_parameters(params: GenerationParams) -> JSON:
    """The set parameters in TGI's names. TGI rejects temperature 0, top_p 1
    and top_k 0, which mean its defaults (no sampling warper): they are left
    out. presence_penalty and reasoning_budget_tokens have no TGI parameter."""
    fields: JSON = {
        "max_new_tokens": params.max_tokens,
        "temperature": params.temperature or None,
        "top_p": None if params.top_p == 1 else params.top_p,
        "top_k": params.top_k or None,
        "stop": list(params.stop) or None,
        "seed": params.seed,
        "frequency_penalty": params.frequency_penalty,
    }
    parameters = {key: value for key, value in fields.items() if value is not None}
    # Without it the last event has no finish reason and no token counts.
    parameters["details"] = True
    return parameters


# --- response ------------------------------------------------------------------

_FINISH_REASONS = {
    "eos_token": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "length": FinishReason.LENGTH,
}

# The HTTP status TGI answers each error type with (router/src/server.rs),
# so that an error in the stream maps like the same error before it.
_ERROR_STATUS = {
    "validation": 422,
    "template_error": 422,
    "missing_template_variable": 422,
    "tool_error": 422,
    "generation": 424,
    "overloaded": 429,
    "incomplete_generation": 500,
    "incomplete_generation_stream": 500,
}


class TGIStreamDecoder(SSEStreamDecoder):
    """Sans-I/O: /generate_stream bytes in, domain events out. `provider`
    names the upstream in errors (a TGI container behind SageMaker)."""

    def __init__(self, model: str, provider: str = PROVIDER) -> None:
        super().__init__()
        self.provider = provider
        self._model = model
        self._started = False

    def _end_of_body(self) -> list[Event]:
        raise errors.upstream_protocol_error(
            self.provider, "stream ended before the event with generated_text"
        )

    def _handle(self, sse: SSEEvent, events: list[Event]) -> None:
        payload = orjson.loads(sse.data)
        if "error" in payload:
            message, error_type = _describe(payload)
            raise errors.upstream_http_error(
                self.provider,
                _ERROR_STATUS.get(error_type, 500),
                message or error_type or "error in stream",
                error_type=error_type,
            )
        if not self._started:
            self._started = True
            events.append(Start("", self._model))
        token = payload["token"]
        # Special tokens (</s>, <|eot_id|>...) are markup, not text.
        if not token["special"] and (text := token["text"]):
            events.append(TextDelta(text))
        if payload.get("generated_text") is not None:
            self.done = True
            events += _end(payload.get("details"))


def _end(details: JSON | None) -> list[Event]:
    if not details:
        # A server that ignored `details`: no reason, no counts.
        return [Usage(reported=False), Finish(FinishReason.OTHER)]
    reason = details["finish_reason"]
    prompt = details.get("input_length")
    usage = Usage(
        input_tokens=prompt or 0,
        output_tokens=details["generated_tokens"],
        # Older servers report no prompt length.
        reported=prompt is not None,
    )
    return [usage, Finish(_FINISH_REASONS.get(reason, FinishReason.OTHER), reason)]


def _describe(payload: JSON) -> tuple[str, str]:
    """The message and type of a TGI error body or event."""
    return str(payload.get("error") or ""), str(payload.get("error_type") or "")
