"""The llama.cpp server (`llama-server`), from its root URL.

Chat and embeddings go to its OpenAI-compatible `/v1/chat/completions` and
`/v1/embeddings` (openai.py's wire format). Completions go to its native
`POST /completion` with `"stream": true`: SSE `data: {...}` events, one per
token batch, `{"content", "tokens", "stop": false, "tokens_predicted",
"tokens_evaluated", ...}`, then a last event with `"stop": true` carrying
`stop_type` (eos | word | limit | none), `tokens_predicted`,
`tokens_evaluated`, `model` and `timings`; no [DONE] follows. An error
after HTTP 200 is an event `{"error": {"code", "message", "type"}}`, the
same object as its HTTP error bodies (tools/server in ggml-org/llama.cpp).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import orjson

from sluice import errors
from sluice.domain import (
    CompletionRequest,
    Event,
    Finish,
    FinishReason,
    Operation,
    Request,
    Start,
    TextDelta,
    Usage,
)
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import Feature
from sluice.providers.http import UpstreamRequest
from sluice.providers.openai import OpenAICompatibleAdapter, describe_error
from sluice.providers.settings import ProviderSettings
from sluice.providers.sse import SSEStreamDecoder
from sluice.providers.wire import JSON, json_headers, sampling_fields

if TYPE_CHECKING:
    from sluice.providers.base import StreamDecoder
    from sluice.providers.http import UpstreamClient
    from sluice.providers.sse import SSEEvent

PROVIDER = "llama_cpp"


class LlamaCppAdapter(OpenAICompatibleAdapter):
    def __init__(
        self,
        settings: LlamaCppSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        base = settings.base_url
        self._name = settings.name
        super().__init__(
            client,
            provider=PROVIDER,
            model=settings.name,
            urls={
                Operation.CHAT: f"{base}/v1/chat/completions",
                Operation.COMPLETION: f"{base}/completion",
                Operation.EMBEDDING: f"{base}/v1/embeddings",
            },
            # `--api-key` servers take it as a bearer token.
            headers=json_headers(bearer=settings.key),
            max_tokens_field="max_tokens",
            connect_timeout=connect_timeout,
            bounds=bounds,
        )

    def build(self, request: Request) -> UpstreamRequest:
        if not isinstance(request, CompletionRequest):
            return super().build(request)
        if request.suffix:
            raise errors.invalid_argument(
                "suffix", "llama_cpp completions have no fill-in-the-middle suffix"
            )
        body: JSON = {"prompt": request.prompt, "stream": True}
        body.update(sampling_fields(request.generation, max_tokens="n_predict"))
        return UpstreamRequest(self._urls[Operation.COMPLETION], body, self._headers)

    def decoder(self, request: Request) -> StreamDecoder:
        if isinstance(request, CompletionRequest):
            return LlamaCppCompletionDecoder(self._name)
        return super().decoder(request)


class LlamaCppSettings(ProviderSettings):
    operations: ClassVar[frozenset[Operation]] = frozenset(Operation)
    # The server root, llama-server's default port.
    default_api_base: ClassVar[str] = "http://localhost:8080"
    # Chat goes over the OpenAI wire format, which carries these as OpenAI does.
    features = frozenset({Feature.JSON_OBJECT, Feature.JSON_SCHEMA, Feature.PROVIDER_OPTIONS})
    adapter = LlamaCppAdapter

    provider: Literal["llama_cpp"]


# --- response ------------------------------------------------------------------

_FINISH_REASONS = {
    "eos": FinishReason.STOP,
    "word": FinishReason.STOP,
    "limit": FinishReason.LENGTH,
}


class LlamaCppCompletionDecoder(SSEStreamDecoder):
    """Sans-I/O: /completion stream bytes in, domain events out."""

    provider = PROVIDER

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model  # only the last event names the model
        self._started = False

    def _end_of_body(self) -> list[Event]:
        raise errors.upstream_protocol_error(PROVIDER, 'stream ended before the "stop": true event')

    def _handle(self, sse: SSEEvent, events: list[Event]) -> None:
        chunk = orjson.loads(sse.data)
        if "error" in chunk:
            raise _stream_error(chunk["error"])
        if not self._started:
            self._started = True
            events.append(Start("", self._model))
        # In a stream the last event's content is empty: the text came before.
        if content := chunk["content"]:
            events.append(TextDelta(content))
        if chunk["stop"]:
            self.done = True
            reason = str(chunk.get("stop_type") or "")
            usage = Usage(
                input_tokens=chunk["tokens_evaluated"], output_tokens=chunk["tokens_predicted"]
            )
            events += [usage, Finish(_FINISH_REASONS.get(reason, FinishReason.OTHER), reason)]


def _stream_error(error: object) -> errors.GatewayError:
    """An error event, mapped as the HTTP status its `code` gives."""
    if not isinstance(error, dict):
        return errors.upstream_http_error(PROVIDER, 500, str(error) or "error in stream")
    message, error_type = describe_error(error)
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    return errors.upstream_http_error(
        PROVIDER, status, message or error_type or "error in stream", error_type=error_type
    )
