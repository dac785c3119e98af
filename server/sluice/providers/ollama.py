"""Ollama's native API: `/api/chat`, `/api/generate` and `/api/embed`.

(Ollama's OpenAI-compatible `/v1` is provider `openai` with an `api_base`.)

Chat and generate stream NDJSON: one JSON object per line, each naming the
model and carrying a fragment (`message.content` / `message.thinking` /
`message.tool_calls` for chat, `response` / `thinking` for generate); the
last line has `done: true`, `done_reason` and the token counts. An error
after HTTP 200 is a line `{"error": "<message>"}` that ends the stream.
Embeddings answer with one JSON body.

Where Ollama differs from the other APIs:
- No response id: Start has id "". Tool calls arrive whole, with an `id`
  only from Ollama 0.12.10 on; before, a call gets `call_<index>`.
- Images only inline (base64 in `images`): an image URL is refused.
- No tool_choice: "none" sends no tools, "required" sends them all (Ollama
  cannot force a call), a named tool is sent alone so it is the only one
  the model can call.
- No thinking budget: reasoning_budget_tokens > 0 (or any reasoning_effort)
  turns `think` on, 0 off.
- Structured output is `format`: "json", or the JSON Schema itself.
"""

from __future__ import annotations

import abc
import base64
import json
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
    ImagePart,
    Message,
    Operation,
    ReasoningDelta,
    Request,
    ResponseFormat,
    ResponseFormatType,
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
from sluice.providers.base import (
    EmbeddingDecoder,
    ErrorFields,
    HttpAdapter,
    StreamDecoder,
)
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import Feature, thinking_budget
from sluice.providers.http import UpstreamRequest
from sluice.providers.ndjson import NDJSONStreamDecoder
from sluice.providers.openai import function_tool
from sluice.providers.settings import ProviderSettings
from sluice.providers.wire import JSON, json_headers, sampling_fields, tool_call_arguments

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sluice.providers.http import UpstreamClient

PROVIDER = "ollama"


class OllamaAdapter(HttpAdapter):
    provider = PROVIDER

    def __init__(
        self,
        settings: OllamaSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(client, connect_timeout=connect_timeout, bounds=bounds)
        self._model = settings.name
        self._keep_alive = settings.keep_alive
        base = settings.base_url
        self._urls = {
            Operation.CHAT: f"{base}/api/chat",
            Operation.COMPLETION: f"{base}/api/generate",
            Operation.EMBEDDING: f"{base}/api/embed",
        }
        # Ollama has no auth of its own; proxies in front of it (and ollama.com) take a bearer.
        self._headers = json_headers(bearer=settings.key)

    def build(self, request: Request) -> UpstreamRequest:
        body: JSON = {"model": self._model}
        if isinstance(request, EmbeddingRequest):
            body["input"] = list(request.inputs)
            if request.dimensions is not None:
                body["dimensions"] = request.dimensions
        else:
            if isinstance(request, ChatRequest):
                body["messages"] = _messages(request.messages)
                if tools := _tools(request.tools, request.tool_choice):
                    body["tools"] = tools
                if (format := _format(request.response_format)) is not None:
                    body["format"] = format
            else:
                body["prompt"] = request.prompt
                if request.suffix:
                    body["suffix"] = request.suffix
            body["stream"] = True
            generation = request.generation
            if options := sampling_fields(generation, max_tokens="num_predict"):
                body["options"] = options
            if (budget := thinking_budget(generation)) is not None:
                body["think"] = budget > 0
        if self._keep_alive is not None:
            body["keep_alive"] = self._keep_alive
        return UpstreamRequest(
            self._urls[request.operation], self.with_options(request, body), self._headers
        )

    def decoder(self, request: Request) -> StreamDecoder:
        if isinstance(request, ChatRequest):
            return OllamaChatDecoder()
        if isinstance(request, CompletionRequest):
            return OllamaGenerateDecoder()
        return OllamaEmbeddingDecoder()

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        message = payload.get("error") if isinstance(payload, dict) else None
        return ErrorFields(message if isinstance(message, str) else "")


class OllamaSettings(ProviderSettings):
    operations: ClassVar[frozenset[Operation]] = frozenset(
        {Operation.CHAT, Operation.COMPLETION, Operation.EMBEDDING}
    )
    # The server root: paths such as /api/chat are appended to it.
    default_api_base: ClassVar[str] = "http://localhost:11434"
    adapter = OllamaAdapter
    # Ollama has no end-user field.
    features = frozenset(
        {
            Feature.JSON_OBJECT,
            Feature.JSON_SCHEMA,
            Feature.REASONING_EFFORT,
            Feature.PROVIDER_OPTIONS,
        }
    )

    provider: Literal["ollama"]
    # How long the model stays loaded after a call: a duration ("10m") or
    # seconds; negative keeps it loaded. Unset leaves the server's default.
    keep_alive: str | int | float | None = None


# --- request -------------------------------------------------------------------


def _messages(messages: Sequence[Message]) -> list[JSON]:
    # A tool result names its tool, not its call: find the name by call id.
    tool_names = {
        part.id: part.name
        for message in messages
        for part in message.parts
        if isinstance(part, ToolCallPart)
    }
    out: list[JSON] = []
    for i, message in enumerate(messages):
        text: list[str] = []
        images: list[str] = []
        tool_calls: list[JSON] = []
        has_results = False
        # Reasoning parts are left out: this API takes no reasoning back.
        for j, part in enumerate(message.parts):
            if isinstance(part, TextPart):
                text.append(part.text)
            elif isinstance(part, ImagePart):
                images.append(_inline_image(part, f"messages[{i}].parts[{j}].image"))
            elif isinstance(part, ToolCallPart):
                tool_calls.append(_tool_call(part, f"messages[{i}].parts[{j}]"))
            elif isinstance(part, ToolResultPart):
                # Each result is a message of its own, whatever the role it came in.
                out.append(_tool_result(part, tool_names.get(part.tool_call_id, "")))
                has_results = True
        if has_results and not (text or images or tool_calls):
            continue
        entry: JSON = {"role": message.role.value, "content": "".join(text)}
        if images:
            entry["images"] = images
        if tool_calls:
            entry["tool_calls"] = tool_calls
        out.append(entry)
    return out


def _inline_image(part: ImagePart, field: str) -> str:
    if not part.data:
        raise errors.invalid_argument(field, "ollama takes images inline only, not by URL")
    return base64.b64encode(part.data).decode("ascii")


def _tool_call(part: ToolCallPart, field: str) -> JSON:
    arguments = tool_call_arguments(part, field)
    # Ollama takes the arguments as an object; servers that know call ids read `id`.
    call: JSON = {"function": {"name": part.name, "arguments": arguments}}
    if part.id:
        call["id"] = part.id
    return call


def _tool_result(part: ToolResultPart, tool_name: str) -> JSON:
    # No error flag in Ollama: the content says it. Servers without call ids
    # ignore tool_call_id (Go's JSON decoding skips unknown fields).
    result: JSON = {"role": "tool", "content": part.content, "tool_call_id": part.tool_call_id}
    if tool_name:
        result["tool_name"] = tool_name
    return result


def _format(format: ResponseFormat | None) -> str | JSON | None:
    """`format`: "json" for any JSON, the schema itself for one; none for text."""
    if format is None or format.type is ResponseFormatType.TEXT:
        return None
    if format.type is ResponseFormatType.JSON_OBJECT:
        return "json"
    return dict(format.schema)


def _tools(tools: Sequence[Tool], choice: ToolChoice | None) -> list[JSON]:
    """The tools to offer, as near to `choice` as Ollama (no tool_choice) allows."""
    if choice is None:
        return [function_tool(tool) for tool in tools]
    if choice.tool_name:
        named = [tool for tool in tools if tool.name == choice.tool_name]
        if not named:
            raise errors.invalid_argument(
                "tool_choice", f"tool {choice.tool_name!r} is not among the request's tools"
            )
        return [function_tool(named[0])]
    if choice.mode is ToolChoiceMode.NONE:
        return []
    return [function_tool(tool) for tool in tools]


# --- response ------------------------------------------------------------------

# "load" and "unload" (a call without a prompt) finish as OTHER.
_FINISH_REASONS = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}


class _OllamaStreamDecoder(NDJSONStreamDecoder):
    """Sans-I/O: NDJSON stream bytes in, domain events out. Subclasses read
    a line's content; this class does Start, usage, finish and errors."""

    provider = PROVIDER

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._tool_calls = 0  # calls so far: the next call's index

    def _end_of_body(self) -> list[Event]:
        raise errors.upstream_protocol_error(PROVIDER, "stream ended before its done line")

    def _handle(self, frame: bytes, events: list[Event]) -> None:
        line = orjson.loads(frame)
        if error := line.get("error"):
            # HTTP 200 is already sent: the line stands for a server error.
            raise errors.upstream_http_error(PROVIDER, 500, str(error))
        if not self._started:
            self._started = True
            events.append(Start("", line.get("model") or ""))
        self._content(line, events)
        if line["done"]:
            self.done = True
            reason = line.get("done_reason") or ""
            finish = _FINISH_REASONS.get(reason, FinishReason.OTHER)
            # Ollama says "stop" after tool calls too.
            if self._tool_calls and finish is FinishReason.STOP:
                finish = FinishReason.TOOL_CALLS
            events += (_usage(line), Finish(finish, reason))

    @abc.abstractmethod
    def _content(self, line: JSON, events: list[Event]) -> None:
        """Append the events of one line's content."""


class OllamaChatDecoder(_OllamaStreamDecoder):
    def _content(self, line: JSON, events: list[Event]) -> None:
        message = line["message"]
        if thinking := message.get("thinking"):
            events.append(ReasoningDelta(thinking))
        if content := message.get("content"):
            events.append(TextDelta(content))
        for call in message.get("tool_calls") or ():
            index = self._tool_calls
            self._tool_calls += 1
            function = call["function"]
            arguments = function.get("arguments") or {}
            events.append(
                ToolCallDelta(
                    index,
                    # Ollama before 0.12.10 sends no call id: a deterministic one stands in.
                    call.get("id") or f"call_{index}",
                    function["name"],
                    arguments if isinstance(arguments, str) else json.dumps(arguments),
                )
            )


class OllamaGenerateDecoder(_OllamaStreamDecoder):
    def _content(self, line: JSON, events: list[Event]) -> None:
        if thinking := line.get("thinking"):
            events.append(ReasoningDelta(thinking))
        if text := line["response"]:
            events.append(TextDelta(text))


class OllamaEmbeddingDecoder(EmbeddingDecoder):
    """The /api/embed answer."""

    def __init__(self) -> None:
        super().__init__(PROVIDER)

    def _read(self, payload: JSON) -> tuple[Start, Embeddings, Usage]:
        if error := payload.get("error"):
            raise errors.upstream_http_error(PROVIDER, 500, str(error))
        count = payload.get("prompt_eval_count")
        return (
            Start("", payload.get("model") or ""),
            Embeddings(tuple(tuple(vector) for vector in payload["embeddings"])),
            Usage(input_tokens=count or 0, reported=count is not None),
        )


def _usage(line: JSON) -> Usage:
    """Counts of the done line. Ollama leaves zero counts out (Go omitempty)
    and servers before mid-2024 left prompt_eval_count out for a cached
    prompt: a missing count is not reported. prompt_eval_count includes the
    cached part, which newer servers report as prompt_eval_cached_count."""
    prompt = line.get("prompt_eval_count")
    output = line.get("eval_count")
    return Usage(
        input_tokens=prompt or 0,
        output_tokens=output or 0,
        cached_input_tokens=line.get("prompt_eval_cached_count") or 0,
        reported=prompt is not None and output is not None,
    )
