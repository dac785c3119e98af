"""OpenAI Chat Completions, legacy Completions and Embeddings, and every
service that speaks them.

A service that only differs from OpenAI in its base URL and a few quirks is
a preset of this adapter (`provider: groq`, `vllm`...; see PRESETS); Azure
OpenAI (azure_openai.py) reuses the adapter with its own URLs and auth.

Chat and completion calls always stream: SSE whose `data` is one JSON chunk
(`choices[0].delta` for chat, `choices[0].text` for completions), with
`stream_options.include_usage` asking for a last chunk that has `usage` and
empty `choices`, then `data: [DONE]`. An error after HTTP 200 arrives as a
chunk with an `error` key. Embeddings answer with one JSON body.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
from pydantic import AliasChoices, Field

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
    Start,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
)
from sluice.errors import GatewayError
from sluice.providers.base import (
    EmbeddingDecoder,
    ErrorFields,
    HttpAdapter,
    StreamDecoder,
)
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import ALL_FEATURES
from sluice.providers.http import UpstreamRequest
from sluice.providers.settings import ProviderSettings
from sluice.providers.sse import SSEStreamDecoder
from sluice.providers.wire import JSON, image_data_url, json_headers

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sluice.providers.http import UpstreamClient
    from sluice.providers.sse import SSEEvent

PROVIDER = "openai"

# The body field that caps the output tokens of a chat call.
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]
PresetName = Literal[
    "openai", "vllm", "groq", "together", "deepseek", "openrouter", "xai", "fireworks"
]


@dataclass(frozen=True, slots=True)
class Preset:
    """What sets one OpenAI-compatible service apart from the others."""

    # The SDK base URL: /chat/completions, /completions, /embeddings follow it.
    api_base: str
    operations: frozenset[Operation]
    # OpenAI's reasoning models (o-series, gpt-5) refuse `max_tokens` in chat,
    # where OpenAI deprecated it; many compatible servers know only `max_tokens`.
    # Legacy completions always take `max_tokens`.
    max_tokens_field: MaxTokensField
    completions_path: str = "/completions"
    # OpenTelemetry's `gen_ai.provider.name`, where it is not the preset's name.
    otel_name: str | None = None
    # What MLflow AI Gateway calls the service, if it knows it.
    mlflow_name: str | None = None
    # A model id's vendor and the vendor's name for it, for a service that
    # serves other vendors' models (see ProviderSettings.vendor_model).
    vendor_model: Callable[[str], tuple[str, str] | None] | None = None


# OpenRouter's vendor prefixes ("anthropic/claude-...") and the vendor each names.
_OPENROUTER_VENDORS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gemini",
    "mistralai": "mistral",
    "cohere": "cohere",
}


def _openrouter_model(model: str) -> tuple[str, str] | None:
    """`anthropic/claude-3.5-sonnet` as `anthropic`'s `claude-3-5-sonnet`:
    Claude ids on Anthropic's API have no dots."""
    vendor, slash, name = model.partition("/")
    if not slash or vendor not in _OPENROUTER_VENDORS:
        return None
    vendor = _OPENROUTER_VENDORS[vendor]
    return vendor, name.replace(".", "-") if vendor == "anthropic" else name


_ALL = frozenset(Operation)
_CHAT = frozenset({Operation.CHAT})
_CHAT_AND_COMPLETION = frozenset({Operation.CHAT, Operation.COMPLETION})

# From each service's API reference and SDK. All of them accept
# stream_options.include_usage (OpenRouter ignores it: it always reports usage).
PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "openai": Preset(
            "https://api.openai.com/v1", _ALL, "max_completion_tokens", mlflow_name="openai"
        ),
        # Any model vLLM serves; it answers the operations the model can.
        "vllm": Preset("http://localhost:8000/v1", _ALL, "max_tokens"),
        # Chat only: no legacy completions, and /embeddings serves no model yet.
        # Groq deprecated `max_tokens` for `max_completion_tokens`.
        "groq": Preset("https://api.groq.com/openai/v1", _CHAT, "max_completion_tokens"),
        "together": Preset(
            "https://api.together.xyz/v1", _ALL, "max_tokens", mlflow_name="togetherai"
        ),
        # No embeddings; completions are fill-in-the-middle, a beta under /beta.
        "deepseek": Preset(
            "https://api.deepseek.com",
            _CHAT_AND_COMPLETION,
            "max_tokens",
            completions_path="/beta/completions",
        ),
        "openrouter": Preset(
            "https://openrouter.ai/api/v1", _ALL, "max_tokens", vendor_model=_openrouter_model
        ),
        # /v1/embeddings is documented, but no embedding model is public.
        "xai": Preset("https://api.x.ai/v1", _CHAT_AND_COMPLETION, "max_tokens", otel_name="x_ai"),
        "fireworks": Preset("https://api.fireworks.ai/inference/v1", _ALL, "max_tokens"),
    }
)


class OpenAICompatibleAdapter(HttpAdapter):
    """The OpenAI wire format wherever it is served: subclasses say where
    (URLs) and how to authenticate (headers)."""

    # Response headers that may carry the upstream's request id, in order.
    request_id_headers: ClassVar[tuple[str, ...]] = ("x-request-id",)

    def __init__(
        self,
        client: UpstreamClient,
        *,
        provider: str,
        model: str,
        urls: Mapping[Operation, str],
        headers: Mapping[str, str],
        max_tokens_field: MaxTokensField,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(client, connect_timeout=connect_timeout, bounds=bounds)
        self._provider = provider
        self._model = model
        self._urls = urls
        self._headers = headers
        self._max_tokens_field = max_tokens_field

    # One class serves every preset: the name is the instance's, though
    # Adapter declares a class attribute.
    @property
    def provider(self) -> str:  # type: ignore[override]
        return self._provider

    def build(self, request: Request) -> UpstreamRequest:
        body: JSON = {"model": self._model}
        if isinstance(request, EmbeddingRequest):
            body["input"] = list(request.inputs)
            if request.dimensions is not None:
                body["dimensions"] = request.dimensions
            body["encoding_format"] = "float"
        else:
            if isinstance(request, ChatRequest):
                body["messages"] = _messages(request.messages)
                if request.tools:
                    body["tools"] = [function_tool(tool) for tool in request.tools]
                if request.tool_choice is not None:
                    body["tool_choice"] = _tool_choice(request.tool_choice)
                if request.response_format is not None:
                    body["response_format"] = response_format(request.response_format)
                body.update(self._end_user(request.end_user))
                max_tokens_field = self._max_tokens_field
            else:
                body["prompt"] = request.prompt
                if request.suffix:
                    body["suffix"] = request.suffix
                max_tokens_field = "max_tokens"
            body["stream"] = True
            # Without it OpenAI sends no usage at all in a stream.
            body["stream_options"] = {"include_usage": True}
            body.update(_generation(request.generation, max_tokens_field))
        return UpstreamRequest(
            self._urls[request.operation], self.with_options(request, body), self._headers
        )

    def _end_user(self, end_user: str) -> JSON:
        """`user`, the field every OpenAI-compatible API takes."""
        return {"user": end_user} if end_user else {}

    def decoder(self, request: Request) -> StreamDecoder:
        if isinstance(request, ChatRequest):
            return OpenAIChatDecoder(self._provider)
        if isinstance(request, CompletionRequest):
            return OpenAICompletionDecoder(self._provider)
        return OpenAIEmbeddingDecoder(self._provider)

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        request_id = next(
            (headers[name] for name in self.request_id_headers if name in headers), ""
        )
        # Older vLLM answers with the error object at the top level.
        error = payload.get("error", payload) if isinstance(payload, dict) else None
        if isinstance(error, str):  # {"error": "..."}, as Ollama sends
            return ErrorFields(message=error, request_id=request_id)
        if not isinstance(error, dict):
            return ErrorFields(request_id=request_id)
        message, error_type = describe_error(error)
        return ErrorFields(message, error_type, request_id, self._error_details(error))

    def _error_details(self, error: JSON) -> dict[str, str]:
        """ErrorInfo metadata worth passing on from an error object."""
        return {}


class OpenAIAdapter(OpenAICompatibleAdapter):
    """A preset of the OpenAI wire format."""

    @property
    def option_names(self) -> tuple[str, ...]:
        # `openai` options apply to every preset, the preset's own over them.
        return tuple(dict.fromkeys(("openai", self.provider)))

    def _end_user(self, end_user: str) -> JSON:
        if not end_user or self.provider != "openai":
            return super()._end_user(end_user)
        # OpenAI's successor of the deprecated `user`; both are sent, for
        # the APIs that know only `user`.
        return {"user": end_user, "safety_identifier": end_user}

    def __init__(
        self,
        settings: OpenAISettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        preset = settings.preset
        base = settings.base_url
        # Self-hosted servers (vLLM, Ollama, TGI) often run without a key.
        headers = json_headers(bearer=settings.key)
        if settings.organization:
            headers["openai-organization"] = settings.organization
        if settings.project:
            headers["openai-project"] = settings.project
        super().__init__(
            client,
            provider=settings.provider,
            model=settings.name,
            urls={
                Operation.CHAT: f"{base}/chat/completions",
                Operation.COMPLETION: f"{base}{preset.completions_path}",
                Operation.EMBEDDING: f"{base}/embeddings",
            },
            headers=headers,
            max_tokens_field=settings.max_tokens_field or preset.max_tokens_field,
            connect_timeout=connect_timeout,
            bounds=bounds,
        )


class OpenAISettings(ProviderSettings):
    """OpenAI, or the OpenAI-compatible service its preset names."""

    adapter = OpenAIAdapter
    features = ALL_FEATURES

    provider: PresetName
    organization: str | None = Field(
        default=None, validation_alias=AliasChoices("organization", "openai_organization")
    )
    project: str | None = None
    # Default: the preset's (see Preset.max_tokens_field).
    max_tokens_field: MaxTokensField | None = None

    @property
    def preset(self) -> Preset:
        return PRESETS[self.provider]

    # Varies by preset, though ProviderSettings declares a class attribute.
    @property
    def operations(self) -> frozenset[Operation]:  # type: ignore[override]
        return self.preset.operations

    @property
    def base_url(self) -> str:
        return (self.api_base or self.preset.api_base).rstrip("/")

    # The facts that vary by preset: see Preset.

    @classmethod
    def otel_provider(cls, provider: str) -> str:
        return PRESETS[provider].otel_name or provider

    @classmethod
    def vendor_model(cls, provider: str, model: str) -> tuple[str, str] | None:
        vendor_model = PRESETS[provider].vendor_model
        return None if vendor_model is None else vendor_model(model)

    @classmethod
    def mlflow_aliases(cls, provider: str) -> tuple[str, ...]:
        mlflow_name = PRESETS[provider].mlflow_name
        return () if mlflow_name is None else (mlflow_name,)


# --- request -------------------------------------------------------------------


def _messages(messages: Sequence[Message]) -> list[JSON]:
    out: list[JSON] = []
    for i, message in enumerate(messages):
        content: list[JSON] = []
        tool_calls: list[JSON] = []
        has_results = False
        # Reasoning parts are left out: this API takes no reasoning back.
        for j, part in enumerate(message.parts):
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                url = image_data_url(part, f"messages[{i}].parts[{j}]")
                content.append({"type": "image_url", "image_url": {"url": url}})
            elif isinstance(part, ToolCallPart):
                function = {"name": part.name, "arguments": part.arguments}
                tool_calls.append({"id": part.id, "type": "function", "function": function})
            elif isinstance(part, ToolResultPart):
                # Each result is a message of its own, whatever the role it came in.
                out.append(tool_result_message(part))
                has_results = True
        if has_results and not content and not tool_calls:
            continue
        entry: JSON = {"role": message.role.value, "content": message_content(content, tool_calls)}
        if tool_calls:
            entry["tool_calls"] = tool_calls
        if message.name:
            entry["name"] = message.name
        out.append(entry)
    return out


def message_content(content: list[JSON], tool_calls: list[JSON]) -> str | list[JSON] | None:
    if not content:
        # An assistant turn that only calls tools has null content.
        return None if tool_calls else ""
    if all(item["type"] == "text" for item in content):
        # Plain string content: the form every compatible server accepts.
        return "".join(item["text"] for item in content)
    return content


def tool_result_message(part: ToolResultPart) -> JSON:
    # Chat Completions has no error flag for a tool result: the content says it.
    return {"role": "tool", "tool_call_id": part.tool_call_id, "content": part.content}


def function_tool(tool: Tool) -> JSON:
    function: JSON = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    # No schema means no parameters; some servers reject an empty one.
    if tool.parameters:
        function["parameters"] = dict(tool.parameters)
    return {"type": "function", "function": function}


def response_format(format: ResponseFormat) -> JSON:
    """Chat Completions' `response_format`, which Mistral shares."""
    if format.type is not ResponseFormatType.JSON_SCHEMA:
        return {"type": format.type.value}
    schema: JSON = {"name": format.schema_name, "schema": dict(format.schema)}
    if format.strict:
        schema["strict"] = True
    return {"type": "json_schema", "json_schema": schema}


def _tool_choice(choice: ToolChoice) -> str | JSON:
    if choice.tool_name:
        return {"type": "function", "function": {"name": choice.tool_name}}
    return choice.mode.value if choice.mode else "auto"


def _generation(params: GenerationParams, max_tokens_field: MaxTokensField) -> JSON:
    """The set parameters. top_k and reasoning_budget_tokens are no OpenAI
    parameters; reasoning_effort is, spelled as the domain spells it."""
    fields: JSON = {
        max_tokens_field: params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop) or None,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "seed": params.seed,
        "reasoning_effort": params.reasoning_effort.value if params.reasoning_effort else None,
    }
    return {key: value for key, value in fields.items() if value is not None}


# --- response ------------------------------------------------------------------

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
    "eos": FinishReason.STOP,  # Together
    "model_length": FinishReason.LENGTH,  # Mistral: the context window is full
}

# The HTTP status each error type comes with, so that an error in a stream
# maps like the same error before it.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "rate_limited": 429,  # Mistral
}


class _OpenAIStreamDecoder(SSEStreamDecoder):
    """Sans-I/O: SSE stream bytes in, domain events out. Subclasses read the
    content of a choice; this class does Start, usage, finish and errors."""

    def __init__(self, provider: str = PROVIDER) -> None:
        super().__init__()
        # Compatible providers (Azure, Mistral...) decode with their own name.
        self.provider = provider
        self._started = False
        self._id = ""
        self._model = ""
        self._finish_reason = ""
        self._usage: Usage | None = None
        self._called_tools = False

    def _end_of_body(self) -> list[Event]:
        # Some compatible servers end a complete stream without [DONE].
        if not self._finish_reason or self._usage is None:
            raise errors.upstream_protocol_error(self.provider, "stream ended before [DONE]")
        return self._end()

    def _handle(self, sse: SSEEvent, events: list[Event]) -> None:
        if sse.event != "message":
            if sse.event == "error":
                raise _event_error(sse.data, self.provider)
            return
        if sse.data == "[DONE]":
            self.done = True
            events.extend(self._end())
            return
        chunk = orjson.loads(sse.data)
        # Older vLLM and Mistral send the error object bare.
        if chunk.get("error") or chunk.get("object") == "error":
            raise _stream_error(chunk if chunk.get("error") else {"error": chunk}, self.provider)
        if usage := chunk.get("usage"):
            self._usage = _usage(usage)
        choices = chunk.get("choices")
        if not self._started:
            self._start(chunk, events, answering=bool(choices))
        if choices:
            # Sluice never asks for n > 1: the first choice is the answer.
            choice = choices[0]
            self._choice(choice, events)
            if reason := choice.get("finish_reason"):
                self._finish_reason = reason

    def _start(self, chunk: JSON, events: list[Event], *, answering: bool) -> None:
        """Start once the answer does: Azure opens with a chunk of prompt
        filter results (no choices, no id)."""
        self._id = self._id or chunk.get("id") or ""
        self._model = self._model or chunk.get("model") or ""
        if answering:
            self._started = True
            events.append(Start(self._id, self._model))

    @abc.abstractmethod
    def _choice(self, choice: JSON, events: list[Event]) -> None:
        """Append the events of one choice's content."""

    def _end(self) -> list[Event]:
        events: list[Event] = [] if self._started else [Start(self._id, self._model)]
        self._started = True
        # A server that ignores include_usage (TGI) reports none.
        events.append(self._usage or Usage(reported=False))
        reason = self._finish_reason
        finish = _FINISH_REASONS.get(reason, FinishReason.OTHER)
        # A forced tool choice ends with "stop" on OpenAI, and TGI never says
        # "tool_calls": the caller needs to know tools were called.
        if self._called_tools and finish in (FinishReason.STOP, FinishReason.OTHER):
            finish = FinishReason.TOOL_CALLS
        events.append(Finish(finish, reason))
        return events


class OpenAIChatDecoder(_OpenAIStreamDecoder):
    def __init__(self, provider: str = PROVIDER) -> None:
        super().__init__(provider)
        # Tool call index -> id already sent: TGI repeats the id on every delta.
        self._tool_call_ids: dict[int, str] = {}

    def _choice(self, choice: JSON, events: list[Event]) -> None:
        delta = choice.get("delta")
        if not delta:  # Azure's filter annotations come as choices without one
            return
        # DeepSeek and vLLM say reasoning_content; OpenRouter and Ollama reasoning.
        if reasoning := delta.get("reasoning_content") or delta.get("reasoning"):
            events.append(ReasoningDelta(reasoning))
        if content := delta.get("content"):
            events.append(TextDelta(content))
        if tool_calls := delta.get("tool_calls"):
            for position, call in enumerate(tool_calls):
                index = call.get("index", position)
                call_id = call.get("id") or ""
                if call_id and self._tool_call_ids.get(index) == call_id:
                    call_id = ""
                elif call_id:
                    self._tool_call_ids[index] = call_id
                function = call.get("function") or {}
                name = function.get("name") or ""
                arguments = function.get("arguments") or ""
                if call_id or name or arguments:
                    events.append(ToolCallDelta(index, call_id, name, arguments))
                    self._called_tools = True


class OpenAICompletionDecoder(_OpenAIStreamDecoder):
    def _choice(self, choice: JSON, events: list[Event]) -> None:
        if text := choice.get("text"):
            events.append(TextDelta(text))


class OpenAIEmbeddingDecoder(EmbeddingDecoder):
    def __init__(self, provider: str = PROVIDER) -> None:
        super().__init__(provider)

    def _read(self, payload: JSON) -> tuple[Start, Embeddings, Usage]:
        if payload.get("error"):
            raise _stream_error(payload, self.provider)
        items = sorted(payload["data"], key=lambda item: item["index"])
        usage = payload.get("usage") or {}
        return (
            Start(payload.get("id") or "", payload.get("model") or ""),
            Embeddings(tuple(tuple(item["embedding"]) for item in items)),
            Usage(input_tokens=usage.get("prompt_tokens") or 0),
        )


def _usage(usage: JSON) -> Usage:
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        # DeepSeek reports cache hits as prompt_cache_hit_tokens.
        cached_input_tokens=prompt_details.get("cached_tokens")
        or usage.get("prompt_cache_hit_tokens")
        or 0,
        reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
    )


def describe_error(error: JSON) -> tuple[str, str]:
    """The message (naming the request field at fault) and type of an error object."""
    message = str(error.get("message") or "")
    if param := error.get("param"):
        message = f"{message} (param: {param})"
    code = error.get("code")
    # Azure sends type null with the reason in code ("content_filter").
    error_type = error.get("type") or (code if isinstance(code, str) else "")
    return message, str(error_type)


def _http_status(value: object) -> int | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
        return value
    return None


def _stream_error(chunk: JSON, provider: str) -> GatewayError:
    """The error of a chunk with an `error` key, mapped as if it had come with
    the HTTP status it stands for."""
    error = chunk["error"]
    if not isinstance(error, dict):  # {"error": "<message>"}
        return errors.upstream_http_error(provider, 500, str(error))
    message, error_type = describe_error(error)
    code = error.get("code")
    status = (
        _http_status(code)  # vLLM: the HTTP status
        or _http_status(error.get("http_status_code"))  # TGI
        or _ERROR_STATUS.get(error_type)
        or (_ERROR_STATUS.get(code) if isinstance(code, str) else None)
        or 500
    )
    return errors.upstream_http_error(
        provider, status, message or error_type or "error in stream", error_type=error_type
    )


def _event_error(data: str, provider: str) -> GatewayError:
    """An `event: error` SSE event: an error object, or plain text."""
    try:
        payload = orjson.loads(data)
    except ValueError:
        payload = data
    if not isinstance(payload, dict):
        return errors.upstream_http_error(provider, 500, data or "error event")
    return _stream_error(payload if payload.get("error") else {"error": payload}, provider)
