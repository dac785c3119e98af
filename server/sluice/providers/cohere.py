"""Cohere API v2: Chat (`POST /v2/chat`, `"stream": true`) and Embed
(`POST /v2/embed`). Completion routes are answered as a one-turn chat.

The chat stream is SSE whose `data` is a JSON object naming its own `type`:
`message-start` (the id), then `content-start` / `content-delta`* /
`content-end` per text or thinking block, `tool-plan-delta`* (the plan
written before calling tools), `tool-call-start` / `tool-call-delta`* /
`tool-call-end` per call, `citation-start` / `citation-end`, and last
`message-end` (finish reason, usage, and any error). The stream names no
model: Start carries the configured one. A `data: [DONE]` may follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson

from sluice import errors
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
    Request,
    ResponseFormat,
    ResponseFormatType,
    Role,
    Start,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)
from sluice.providers.base import (
    EmbeddingDecoder,
    ErrorFields,
    HttpAdapter,
    StreamDecoder,
)
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import Feature, thinking_budget
from sluice.providers.http import UpstreamRequest
from sluice.providers.openai import function_tool, tool_result_message
from sluice.providers.settings import ProviderSettings
from sluice.providers.sse import SSEStreamDecoder
from sluice.providers.wire import JSON, image_data_url, json_headers

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sluice.providers.http import UpstreamClient
    from sluice.providers.sse import SSEEvent

PROVIDER = "cohere"


class CohereAdapter(HttpAdapter):
    provider = PROVIDER

    def __init__(
        self,
        settings: CohereSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(client, connect_timeout=connect_timeout, bounds=bounds)
        self._model = settings.name
        self._input_type = settings.input_type
        base = settings.base_url
        self._chat_url = f"{base}/v2/chat"
        self._embed_url = f"{base}/v2/embed"
        self._headers = json_headers(bearer=settings.key)
        if settings.client_name:
            self._headers["x-client-name"] = settings.client_name

    def build(self, request: Request) -> UpstreamRequest:
        if isinstance(request, EmbeddingRequest):
            body: JSON = {
                "model": self._model,
                "texts": list(request.inputs),
                "input_type": self._input_type,
                "embedding_types": ["float"],
            }
            if request.dimensions is not None:
                body["output_dimension"] = request.dimensions
            return UpstreamRequest(self._embed_url, body, self._headers)
        body = {"model": self._model, "stream": True}
        if isinstance(request, ChatRequest):
            body["messages"] = _messages(request.messages)
            if request.tools:
                body["tools"] = [function_tool(tool) for tool in request.tools]
            if request.tool_choice is not None:
                _apply_tool_choice(request.tool_choice, body)
            if request.response_format is not None:
                body["response_format"] = _response_format(request.response_format)
        else:
            body["messages"] = [{"role": "user", "content": _prompt(request)}]
        body.update(_generation(request.generation))
        return UpstreamRequest(self._chat_url, self.with_options(request, body), self._headers)

    def decoder(self, request: Request) -> StreamDecoder:
        if isinstance(request, EmbeddingRequest):
            return CohereEmbeddingDecoder(self._model)
        return CohereChatDecoder(self._model)

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        body = payload if isinstance(payload, dict) else {}
        return ErrorFields(
            message=str(body.get("message") or ""),
            # Cohere sends no x-request-id; its trace id is what its support asks for.
            request_id=str(body.get("id") or "") or headers.get("x-debug-trace-id", ""),
            # Cohere's 498 "invalid token" is its 401: the gateway's key was refused.
            status=401 if status == 498 else None,
        )


class CohereSettings(ProviderSettings):
    operations: ClassVar[frozenset[Operation]] = frozenset(
        {Operation.CHAT, Operation.COMPLETION, Operation.EMBEDDING}
    )
    # The SDK's base URL: /v2/chat and /v2/embed are appended to it.
    default_api_base: ClassVar[str] = "https://api.cohere.com"
    adapter = CohereAdapter
    # Cohere has no end-user field.
    features = frozenset(
        {
            Feature.JSON_OBJECT,
            Feature.JSON_SCHEMA,
            Feature.REASONING_EFFORT,
            Feature.PROVIDER_OPTIONS,
        }
    )
    mlflow_names = ("cohere",)

    provider: Literal["cohere"]
    # What the embedded texts are for: Cohere embeds documents and queries differently.
    input_type: Literal["search_document", "search_query", "classification", "clustering"] = (
        "search_document"
    )
    # The X-Client-Name header, which tells Cohere who calls; "" sends none.
    client_name: str = "sluice"


# --- request -------------------------------------------------------------------


def _prompt(request: CompletionRequest) -> str:
    if request.suffix:
        raise errors.invalid_argument("suffix", "cohere does not support fill-in-the-middle")
    return request.prompt


def _messages(messages: Sequence[Message]) -> list[JSON]:
    out: list[JSON] = []
    for i, message in enumerate(messages):
        texts: list[str] = []
        images: list[JSON] = []
        tool_calls: list[JSON] = []
        has_results = False
        # Reasoning parts are left out: this API takes no reasoning back.
        for j, part in enumerate(message.parts):
            if isinstance(part, TextPart):
                texts.append(part.text)
            elif isinstance(part, ImagePart):
                images.append(_image(part, message.role, f"messages[{i}].parts[{j}].image"))
            elif isinstance(part, ToolCallPart):
                tool_calls.append(_tool_call(part))
            elif isinstance(part, ToolResultPart):
                # Each result is a message of its own, whatever the role it came in.
                out.append(tool_result_message(part))
                has_results = True
        if has_results and not texts and not images and not tool_calls:
            continue
        out.append(_message(message.role, "".join(texts), images, tool_calls))
    return out


def _image(part: ImagePart, role: Role, field: str) -> JSON:
    if role is not Role.USER:
        raise errors.invalid_argument(field, "cohere accepts images in user turns only")
    return {"type": "image_url", "image_url": {"url": image_data_url(part, field)}}


def _tool_call(part: ToolCallPart) -> JSON:
    # Cohere takes arguments as JSON text; a call without any still needs an object.
    function = {"name": part.name, "arguments": part.arguments or "{}"}
    return {"id": part.id, "type": "function", "function": function}


def _message(role: Role, text: str, images: list[JSON], tool_calls: list[JSON]) -> JSON:
    if tool_calls:
        # Cohere's own turns put the text before tool calls in tool_plan.
        entry: JSON = {"role": "assistant", "tool_calls": tool_calls}
        if text:
            entry["tool_plan"] = text
        return entry
    if images:
        content = ([{"type": "text", "text": text}] if text else []) + images
        return {"role": role.value, "content": content}
    return {"role": role.value, "content": text}


def _apply_tool_choice(choice: ToolChoice, body: JSON) -> None:
    """Cohere knows REQUIRED and NONE (unset is auto). It cannot name a tool:
    a named choice offers that tool alone and requires a call."""
    if choice.tool_name:
        tools = [t for t in body.get("tools", ()) if t["function"]["name"] == choice.tool_name]
        if not tools:
            raise errors.invalid_argument(
                "tool_choice", f"tool_choice names {choice.tool_name!r}, which is not in tools"
            )
        body["tools"] = tools
        body["tool_choice"] = "REQUIRED"
    elif choice.mode is ToolChoiceMode.REQUIRED:
        body["tool_choice"] = "REQUIRED"
    elif choice.mode is ToolChoiceMode.NONE:
        body["tool_choice"] = "NONE"


def _response_format(format: ResponseFormat) -> JSON:
    """v2's JSON mode: `json_object`, with the schema under `json_schema`."""
    if format.type is ResponseFormatType.TEXT:
        return {"type": "text"}
    if format.type is ResponseFormatType.JSON_OBJECT:
        return {"type": "json_object"}
    return {"type": "json_object", "json_schema": dict(format.schema)}


def _generation(params: GenerationParams) -> JSON:
    """The set parameters, in Cohere's names."""
    fields: JSON = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "p": params.top_p,
        "k": params.top_k,
        "stop_sequences": list(params.stop) or None,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "seed": params.seed,
    }
    body = {key: value for key, value in fields.items() if value is not None}
    budget = thinking_budget(params)
    if budget is not None:
        # Reasoning models think by default: a zero budget turns it off.
        body["thinking"] = (
            {"type": "enabled", "token_budget": budget} if budget else {"type": "disabled"}
        )
    return body


# --- response ------------------------------------------------------------------

_FINISH_REASONS = {
    "COMPLETE": FinishReason.STOP,
    "STOP_SEQUENCE": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "TOOL_CALL": FinishReason.TOOL_CALLS,
}

# The HTTP status a failed generation stands for, by its finish reason.
_ERROR_STATUS = {"ERROR": 500, "TIMEOUT": 504}


class CohereChatDecoder(SSEStreamDecoder):
    """Sans-I/O: Chat v2 stream bytes in, domain events out. Unknown event
    types (debug, ones added later) are skipped."""

    provider = PROVIDER

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model
        self._started = False
        # Cohere's tool call index -> ours (calls counted from 0 as they start).
        self._tool_calls: dict[int, int] = {}
        # Calls with no arguments streamed yet: they get "{}" at their end.
        self._without_arguments: set[int] = set()

    def _end_of_body(self) -> list[Event]:
        raise errors.upstream_protocol_error(PROVIDER, "stream ended before message-end")

    def _handle(self, sse: SSEEvent, events: list[Event]) -> None:
        if sse.data == "[DONE]":
            return
        payload = orjson.loads(sse.data)
        # The JSON type, not the SSE event name: proxies may drop the latter.
        kind = payload["type"]
        if not self._started:
            self._started = True
            call_id = (payload.get("id") or "") if kind == "message-start" else ""
            events.append(Start(call_id, self._model))
        # content-delta is by far the most frequent: first. A content-start
        # may carry the block's first text.
        if kind in ("content-delta", "content-start"):
            self._content(payload["delta"]["message"]["content"], events)
        elif kind == "tool-call-delta":
            self._tool_call_delta(payload, events)
        elif kind == "tool-plan-delta":
            if plan := payload["delta"]["message"]["tool_plan"]:
                events.append(ReasoningDelta(plan))
        elif kind == "tool-call-start":
            self._start_tool_call(payload, events)
        elif kind == "tool-call-end":
            self._end_tool_call(payload, events)
        elif kind == "message-end":
            self._end(payload["delta"], events)
        # message-start's message is empty; content-end, citations and debug carry nothing for us.

    def _content(self, content: JSON, events: list[Event]) -> None:
        if text := content.get("text"):
            events.append(TextDelta(text))
        elif thinking := content.get("thinking"):
            events.append(ReasoningDelta(thinking))

    def _start_tool_call(self, payload: JSON, events: list[Event]) -> None:
        call = payload["delta"]["message"]["tool_calls"]
        index = len(self._tool_calls)
        self._tool_calls[payload["index"]] = index
        function = call["function"]
        arguments = function.get("arguments") or ""
        if not arguments:
            self._without_arguments.add(index)
        # Cohere names every call; `call_<index>` stands in should one come without.
        call_id = call.get("id") or f"call_{index}"
        events.append(ToolCallDelta(index, call_id, function["name"], arguments))

    def _tool_call_delta(self, payload: JSON, events: list[Event]) -> None:
        fragment = payload["delta"]["message"]["tool_calls"]["function"]["arguments"]
        if fragment:
            index = self._tool_calls[payload["index"]]
            self._without_arguments.discard(index)
            events.append(ToolCallDelta(index, arguments=fragment))

    def _end_tool_call(self, payload: JSON, events: list[Event]) -> None:
        index = self._tool_calls[payload["index"]]
        if index in self._without_arguments:
            self._without_arguments.remove(index)
            events.append(ToolCallDelta(index, arguments="{}"))

    def _end(self, delta: JSON, events: list[Event]) -> None:
        self.done = True
        reason = delta.get("finish_reason") or ""
        if (status := _ERROR_STATUS.get(reason)) is not None:
            raise errors.upstream_http_error(
                PROVIDER,
                status,
                delta.get("error") or f"generation ended with {reason}",
                error_type=reason,
            )
        events.append(_usage(delta.get("usage")))
        finish = _FINISH_REASONS.get(reason, FinishReason.OTHER)
        # The caller needs to know tools were called, whatever the reason says.
        if self._tool_calls and finish in (FinishReason.STOP, FinishReason.OTHER):
            finish = FinishReason.TOOL_CALLS
        events.append(Finish(finish, reason))


def _usage(usage: JSON | None) -> Usage:
    """Token counts, else the billed units; `cached_tokens` is part of the input."""
    usage = usage or {}
    counts = usage.get("tokens") or usage.get("billed_units")
    if not counts:
        return Usage(reported=False)
    input_tokens = counts.get("input_tokens")
    output_tokens = counts.get("output_tokens")
    return Usage(
        # JSON numbers: the API schema types them as floats.
        input_tokens=int(input_tokens or 0),
        output_tokens=int(output_tokens or 0),
        cached_input_tokens=int(usage.get("cached_tokens") or 0),
        reported=input_tokens is not None and output_tokens is not None,
    )


class CohereEmbeddingDecoder(EmbeddingDecoder):
    """The embed answer. It names no model: Start carries the configured one."""

    answer = "embed response"

    def __init__(self, model: str) -> None:
        super().__init__(PROVIDER)
        self._model = model

    def _read(self, payload: JSON) -> tuple[Start, Embeddings, Usage]:
        meta = payload.get("meta") or {}
        counts = meta.get("tokens") or meta.get("billed_units") or {}
        input_tokens = counts.get("input_tokens")
        return (
            Start(payload.get("id") or "", self._model),
            Embeddings(tuple(tuple(vector) for vector in payload["embeddings"]["float"])),
            Usage(input_tokens=int(input_tokens or 0), reported=input_tokens is not None),
        )
