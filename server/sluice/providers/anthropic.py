"""Anthropic Messages API (`POST /v1/messages`, `"stream": true`).

The stream is SSE whose `data` is a JSON object naming its own `type`:
`message_start`, then per content block `content_block_start`,
`content_block_delta`* and `content_block_stop`, then `message_delta`
(stop reason, cumulative usage) and `message_stop`. `ping` may come at any
time and an `error` event may replace the rest of the stream.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
from pydantic import Field

from sluice import errors
from sluice.domain import (
    CacheTtl,
    ChatRequest,
    CompletionRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    ImagePart,
    Message,
    Operation,
    Part,
    ReasoningDelta,
    ReasoningPart,
    ReasoningSignature,
    RedactedReasoning,
    Request,
    ResponseFormat,
    ResponseFormatType,
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
from sluice.errors import GatewayError
from sluice.providers.base import ErrorFields, HttpAdapter
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import Feature, thinking_budget
from sluice.providers.http import UpstreamRequest
from sluice.providers.settings import ProviderSettings
from sluice.providers.sse import SSEStreamDecoder
from sluice.providers.wire import JSON, alternating_turns, tool_call_arguments

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sluice.providers.http import UpstreamClient
    from sluice.providers.sse import SSEEvent

PROVIDER = "anthropic"


class AnthropicAdapter(HttpAdapter):
    provider = PROVIDER

    def __init__(
        self,
        settings: AnthropicSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(client, connect_timeout=connect_timeout, bounds=bounds)
        self._settings = settings
        self._url = f"{settings.base_url}/v1/messages"
        self._headers = {"anthropic-version": settings.version, "content-type": "application/json"}
        if settings.key:
            self._headers["x-api-key"] = settings.key

    def build(self, request: Request) -> UpstreamRequest:
        if isinstance(request, CompletionRequest):
            request = _as_chat(request)
        elif not isinstance(request, ChatRequest):
            # Config validation admits chat and completion routes only (`operations`).
            raise TypeError(f"anthropic cannot answer {request.operation.value}")
        generation = request.generation
        budget = thinking_budget(generation)
        system, messages = _messages(request.messages)
        max_tokens = generation.max_tokens
        if max_tokens is None:
            # Thinking counts against max_tokens: leave the default room for the answer.
            max_tokens = self._settings.default_max_tokens + (budget or 0)
        body: JSON = {
            "model": self._settings.name,
            "max_tokens": max_tokens,
            "stream": True,
            "messages": messages,
        }
        if system:
            body["system"] = system
        body.update(_sampling(generation))
        if request.tools:
            body["tools"] = [_tool(tool) for tool in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
        if budget is not None:
            body["thinking"] = (
                {"type": "enabled", "budget_tokens": budget} if budget else {"type": "disabled"}
            )
        if request.response_format is not None:
            body.update(_output_config(request.response_format))
        if request.end_user:
            body["metadata"] = {"user_id": request.end_user}
        return UpstreamRequest(self._url, self.with_options(request, body), self._headers)

    def decoder(self, request: Request) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        request_id = headers.get("request-id", "")
        if not isinstance(payload, dict) or not isinstance(error := payload.get("error"), dict):
            return ErrorFields(request_id=request_id)
        return ErrorFields(
            message=str(error.get("message") or ""),
            type=str(error.get("type") or ""),
            request_id=str(payload.get("request_id") or request_id),
        )


class AnthropicSettings(ProviderSettings):
    # Completions are one-turn chats: Anthropic retired its text completions API.
    operations: ClassVar[frozenset[Operation]] = frozenset({Operation.CHAT, Operation.COMPLETION})
    default_api_base: ClassVar[str] = "https://api.anthropic.com"
    adapter = AnthropicAdapter
    # No JSON mode without a schema: JSON_OBJECT is refused.
    features = frozenset(
        {Feature.JSON_SCHEMA, Feature.REASONING_EFFORT, Feature.END_USER, Feature.PROVIDER_OPTIONS}
    )
    mlflow_names = ("anthropic",)

    provider: Literal["anthropic"]
    version: str = "2023-06-01"  # the anthropic-version header
    # Anthropic requires max_tokens; this applies when neither request nor route sets it.
    default_max_tokens: int = Field(default=4096, ge=1)


# --- request -------------------------------------------------------------------


def _as_chat(request: CompletionRequest) -> ChatRequest:
    """A completion as a one-turn chat: the prompt is the user's message."""
    if request.suffix:
        raise errors.invalid_argument("suffix", "anthropic has no fill-in-the-middle")
    prompt = Message(Role.USER, (TextPart(request.prompt),))
    return ChatRequest(request.route, (prompt,), request.generation, labels=request.labels)


def _output_config(format: ResponseFormat) -> JSON:
    """Structured output as generally available (`output_config.format`, no
    beta header): JSON_SCHEMA only (Feature); free text is the default."""
    if format.type is not ResponseFormatType.JSON_SCHEMA:
        return {}
    return {"output_config": {"format": {"type": "json_schema", "schema": dict(format.schema)}}}


def _messages(messages: Sequence[Message]) -> tuple[list[JSON], list[JSON]]:
    """System text blocks, and the conversation: Anthropic wants user and
    assistant turns to alternate, and several tool results answer one
    assistant turn as one user turn. Reasoning without a signature (another
    provider's) is left out: Anthropic takes back only the thinking it signed."""
    system, turns = alternating_turns(messages)
    return [_cached(_text(part.text), part.cache) for part in system], [
        {
            "role": "assistant" if turn.assistant else "user",
            "content": [
                _cached(_block(part, field), part.cache)
                for part, field in turn.parts
                if not (isinstance(part, ReasoningPart) and _unsigned(part))
            ],
        }
        for turn in turns
    ]


def _unsigned(part: ReasoningPart) -> bool:
    return not (part.signature or part.redacted_data)


def _cached(block: JSON, cache: CacheTtl | None) -> JSON:
    """`block` with a prompt-cache breakpoint after it, when it marks one."""
    if cache is not None:
        control = {"type": "ephemeral"}
        if cache is not CacheTtl.DEFAULT:
            control["ttl"] = cache.value  # "5m" | "1h", Anthropic's own spelling
        block["cache_control"] = control
    return block


def _text(text: str) -> JSON:
    return {"type": "text", "text": text}


def _block(part: Part, field: str) -> JSON:
    if isinstance(part, TextPart):
        return _text(part.text)
    if isinstance(part, ReasoningPart):
        if part.redacted_data:
            return {"type": "redacted_thinking", "data": part.redacted_data}
        # The thinking exactly as streamed: the signature covers it.
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    if isinstance(part, ImagePart):
        if part.url:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        data = base64.b64encode(part.data).decode("ascii")
        source = {"type": "base64", "media_type": part.media_type, "data": data}
        return {"type": "image", "source": source}
    if isinstance(part, ToolCallPart):
        return {
            "type": "tool_use",
            "id": part.id,
            "name": part.name,
            "input": tool_call_arguments(part, field),
        }
    return _tool_result(part)


def _tool_result(part: ToolResultPart) -> JSON:
    block: JSON = {"type": "tool_result", "tool_use_id": part.tool_call_id, "content": part.content}
    if part.is_error:
        block["is_error"] = True
    return block


def _sampling(params: GenerationParams) -> JSON:
    """The set sampling parameters, in Anthropic's names."""
    fields: JSON = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "stop_sequences": list(params.stop) or None,
    }
    return {key: value for key, value in fields.items() if value is not None}


def _tool(tool: Tool) -> JSON:
    # Anthropic requires an object schema even for a tool without parameters.
    spec: JSON = {"name": tool.name, "input_schema": dict(tool.parameters) or {"type": "object"}}
    if tool.description:
        spec["description"] = tool.description
    return _cached(spec, tool.cache)


_TOOL_CHOICE_TYPES = {
    ToolChoiceMode.AUTO: "auto",
    ToolChoiceMode.REQUIRED: "any",
    ToolChoiceMode.NONE: "none",
}


def _tool_choice(choice: ToolChoice) -> JSON:
    if choice.tool_name:
        return {"type": "tool", "name": choice.tool_name}
    return {"type": _TOOL_CHOICE_TYPES[choice.mode or ToolChoiceMode.AUTO]}


# --- response ------------------------------------------------------------------

_FINISH_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}

# The HTTP status Anthropic answers each error type with, so that an error
# event mid-stream maps like the same error before it.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_USAGE_KEYS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


class AnthropicStreamDecoder(SSEStreamDecoder):
    """Sans-I/O: Messages API stream bytes in, domain events out.

    Unknown event types are skipped, as Anthropic's versioning asks."""

    provider = PROVIDER

    def __init__(self) -> None:
        super().__init__()
        # Content block index -> tool call index (tool_use blocks counted from 0).
        self._tool_calls: dict[int, int] = {}
        # Tool blocks with no arguments streamed yet: they get "{}" at their stop.
        self._without_arguments: set[int] = set()
        # Counts are cumulative: each report replaces the last.
        self._usage = dict.fromkeys(_USAGE_KEYS, 0)
        self._stop_reason = ""

    def _end_of_body(self) -> list[Event]:
        raise errors.upstream_protocol_error(PROVIDER, "stream ended before message_stop")

    def _handle(self, sse: SSEEvent, events: list[Event]) -> None:
        payload = orjson.loads(sse.data)
        kind = payload["type"]
        if kind == "content_block_delta":  # by far the most frequent: first
            self._delta(payload, events)
        elif kind == "content_block_start":
            self._start_block(payload["index"], payload["content_block"], events)
        elif kind == "content_block_stop":
            block = payload["index"]
            if block in self._without_arguments:
                self._without_arguments.remove(block)
                events.append(ToolCallDelta(self._tool_calls[block], arguments="{}"))
        elif kind == "message_start":
            message = payload["message"]
            self._take_usage(message.get("usage"))
            events.append(Start(id=message["id"], model=message["model"]))
        elif kind == "message_delta":
            self._stop_reason = payload["delta"].get("stop_reason") or self._stop_reason
            self._take_usage(payload.get("usage"))
        elif kind == "message_stop":
            self.done = True
            events += self._end()
        elif kind == "error":
            raise _stream_error(payload)
        # Anything else (ping, event types added later) carries nothing for us.

    def _delta(self, payload: JSON, events: list[Event]) -> None:
        delta = payload["delta"]
        delta_type = delta["type"]
        if delta_type == "text_delta":
            if text := delta["text"]:
                events.append(TextDelta(text))
        elif delta_type == "thinking_delta":
            if text := delta["thinking"]:
                events.append(ReasoningDelta(text))
        elif delta_type == "signature_delta":
            events.append(ReasoningSignature(delta["signature"]))
        elif delta_type == "input_json_delta":
            block = payload["index"]
            # Server tool blocks (web search...) stream input too: not ours to call.
            tool_call = self._tool_calls.get(block)
            if tool_call is not None and (fragment := delta["partial_json"]):
                self._without_arguments.discard(block)
                events.append(ToolCallDelta(tool_call, arguments=fragment))

    def _end(self) -> tuple[Usage, Finish]:
        usage = self._usage
        cached = usage["cache_read_input_tokens"]
        reason = _FINISH_REASONS.get(self._stop_reason, FinishReason.OTHER)
        return (
            Usage(
                # Total input (OpenTelemetry GenAI): Anthropic counts cache
                # reads and writes apart from input_tokens.
                input_tokens=usage["input_tokens"] + usage["cache_creation_input_tokens"] + cached,
                output_tokens=usage["output_tokens"],
                cached_input_tokens=cached,
                cache_write_input_tokens=usage["cache_creation_input_tokens"],
            ),
            Finish(reason, provider_reason=self._stop_reason),
        )

    def _start_block(self, index: int, block: JSON, events: list[Event]) -> None:
        block_type = block["type"]
        if block_type == "text":
            if text := block.get("text"):
                events.append(TextDelta(text))
        elif block_type == "thinking":
            if text := block.get("thinking"):
                events.append(ReasoningDelta(text))
            # The API streams the signature as a delta, but a proxy may send the block whole.
            if signature := block.get("signature"):
                events.append(ReasoningSignature(signature))
        elif block_type == "redacted_thinking":
            events.append(RedactedReasoning(block["data"]))
        elif block_type == "tool_use":
            tool_call = len(self._tool_calls)
            self._tool_calls[index] = tool_call
            # The API streams input as deltas from {}, but a proxy may send it whole.
            arguments = json.dumps(block["input"]) if block.get("input") else ""
            if not arguments:
                self._without_arguments.add(index)
            events.append(ToolCallDelta(tool_call, block["id"], block["name"], arguments))

    def _take_usage(self, usage: JSON | None) -> None:
        if usage:
            for key in _USAGE_KEYS:
                if (count := usage.get(key)) is not None:
                    self._usage[key] = count


def _stream_error(payload: JSON) -> GatewayError:
    """An `error` event, mapped as the same error before the stream would be."""
    error = payload["error"]
    error_type = error.get("type", "")
    return errors.upstream_http_error(
        PROVIDER,
        _ERROR_STATUS.get(error_type, 500),
        error.get("message") or error_type,
        error_type=error_type,
        request_id=payload.get("request_id", ""),
    )
