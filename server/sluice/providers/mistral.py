"""Mistral La Plateforme: chat (`/v1/chat/completions`), fill-in-the-middle
completions (`/v1/fim/completions`) and embeddings (`/v1/embeddings`).

The wire format is OpenAI's with Mistral's names (`random_seed`, tool choice
`any`, `output_dimension`), so the OpenAI decoders do most of the work. What
differs on the way back: FIM streams carry chat-shaped chunks
(`choices[0].delta.content`); Magistral models stream `delta.content` as a
list of typed chunks (`thinking`, `text`); usage comes on the finish chunk
without being asked for; a tool call arrives whole in one delta; and
`finish_reason` may be `model_length` or `error`. Mistral rejects fields it
does not know (HTTP 422), so only the fields it names are ever sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from sluice import errors
from sluice.domain import (
    ChatRequest,
    EmbeddingRequest,
    Event,
    GenerationParams,
    ImagePart,
    Message,
    Operation,
    ReasoningDelta,
    Request,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
)
from sluice.providers.base import ErrorFields, HttpAdapter, StreamDecoder
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import Feature
from sluice.providers.http import UpstreamRequest
from sluice.providers.openai import (
    OpenAIChatDecoder,
    OpenAIEmbeddingDecoder,
    describe_error,
    message_content,
    response_format,
)
from sluice.providers.settings import ProviderSettings
from sluice.providers.wire import JSON, image_data_url, json_headers

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sluice.providers.http import UpstreamClient

PROVIDER = "mistral"

# The only tool call ids Mistral accepts (HTTP 400 otherwise).
_MISTRAL_CALL_ID = re.compile(r"[A-Za-z0-9]{9}")
# A tool without parameters still needs a schema: Mistral requires one.
_NO_PARAMETERS: JSON = {"type": "object", "properties": {}}


class MistralAdapter(HttpAdapter):
    provider = PROVIDER

    def __init__(
        self,
        settings: MistralSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(client, connect_timeout=connect_timeout, bounds=bounds)
        self._model = settings.name
        self._safe_prompt = settings.safe_prompt
        base = settings.base_url
        self._urls = {
            Operation.CHAT: f"{base}/v1/chat/completions",
            Operation.COMPLETION: f"{base}/v1/fim/completions",
            Operation.EMBEDDING: f"{base}/v1/embeddings",
        }
        self._headers = json_headers(bearer=settings.key)

    def build(self, request: Request) -> UpstreamRequest:
        body: JSON = {"model": self._model}
        if isinstance(request, EmbeddingRequest):
            body["input"] = list(request.inputs)
            if request.dimensions is not None:
                body["output_dimension"] = request.dimensions
        elif isinstance(request, ChatRequest):
            body["messages"] = _messages(request.messages)
            if request.tools:
                body["tools"] = [_tool(tool) for tool in request.tools]
            if request.tool_choice is not None:
                body["tool_choice"] = _tool_choice(request.tool_choice)
            if request.response_format is not None:
                body["response_format"] = response_format(request.response_format)
            if self._safe_prompt:
                body["safe_prompt"] = True
            body["stream"] = True
            body.update(_generation(request.generation, penalties=True))
        else:
            body["prompt"] = request.prompt
            if request.suffix:
                body["suffix"] = request.suffix
            body["stream"] = True
            # The FIM endpoint has no penalty parameters.
            body.update(_generation(request.generation, penalties=False))
        return UpstreamRequest(
            self._urls[request.operation], self.with_options(request, body), self._headers
        )

    def decoder(self, request: Request) -> StreamDecoder:
        if isinstance(request, EmbeddingRequest):
            return OpenAIEmbeddingDecoder(provider=PROVIDER)
        return MistralStreamDecoder()

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        message, error_type, body_request_id = "", "", ""
        if isinstance(payload, dict):
            message, error_type = _error_message(payload)
            body_request_id = str(payload.get("request_id") or "")
        return ErrorFields(
            message,
            error_type,
            # The id Mistral's support asks for; the API gateway's own otherwise.
            request_id=headers.get("mistral-correlation-id")
            or body_request_id
            or headers.get("x-kong-request-id", ""),
        )


class MistralSettings(ProviderSettings):
    operations: ClassVar[frozenset[Operation]] = frozenset(
        {Operation.CHAT, Operation.COMPLETION, Operation.EMBEDDING}
    )
    # The SDK's server URL: paths start with /v1.
    default_api_base: ClassVar[str] = "https://api.mistral.ai"
    adapter = MistralAdapter
    # Neither a reasoning effort nor an end-user field.
    features = frozenset({Feature.JSON_OBJECT, Feature.JSON_SCHEMA, Feature.PROVIDER_OPTIONS})
    otel_name = "mistral_ai"
    mlflow_names = ("mistral",)

    provider: Literal["mistral"]
    # Mistral prepends its guardrail system prompt to chat calls when set.
    safe_prompt: bool = False


# --- request -------------------------------------------------------------------


def _messages(messages: Sequence[Message]) -> list[JSON]:
    out: list[JSON] = []
    tool_names: dict[str, str] = {}  # call id -> tool name, for the results
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
                content.append({"type": "image_url", "image_url": url})
            elif isinstance(part, ToolCallPart):
                tool_names[part.id] = part.name
                function = {"name": part.name, "arguments": part.arguments}
                tool_calls.append(
                    {"id": _call_id(part.id), "type": "function", "function": function}
                )
            elif isinstance(part, ToolResultPart):
                # Each result is a message of its own, whatever the role it came in;
                # the content says whether the call failed (there is no error flag).
                result: JSON = {
                    "role": "tool",
                    "tool_call_id": _call_id(part.tool_call_id),
                    "content": part.content,
                }
                if name := tool_names.get(part.tool_call_id):
                    result["name"] = name
                out.append(result)
                has_results = True
        if has_results and not content and not tool_calls:
            continue
        # No `name`: Mistral's messages have none and it rejects unknown fields.
        entry: JSON = {"role": message.role.value, "content": message_content(content, tool_calls)}
        if tool_calls:
            entry["tool_calls"] = tool_calls
        out.append(entry)
    return out


def _call_id(call_id: str) -> str:
    """The id as Mistral accepts it: ids from other providers (`call_...`,
    `toolu_...`) are mapped to 9 characters, the same way for a call and its
    result so that they still match."""
    if _MISTRAL_CALL_ID.fullmatch(call_id):
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def _tool(tool: Tool) -> JSON:
    function: JSON = {"name": tool.name, "parameters": dict(tool.parameters) or _NO_PARAMETERS}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoice) -> str | JSON:
    if choice.tool_name:
        return {"type": "function", "function": {"name": choice.tool_name}}
    if choice.mode is ToolChoiceMode.REQUIRED:
        return "any"  # Mistral's word for "call at least one tool"
    return choice.mode.value if choice.mode else "auto"


def _generation(params: GenerationParams, *, penalties: bool) -> JSON:
    """The set parameters, in Mistral's names. top_k has no Mistral
    equivalent, and neither has reasoning_budget_tokens: Magistral models
    always think and take no budget, so it is ignored."""
    fields: JSON = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop) or None,
        "random_seed": params.seed,
    }
    if penalties:
        fields["presence_penalty"] = params.presence_penalty
        fields["frequency_penalty"] = params.frequency_penalty
    return {key: value for key, value in fields.items() if value is not None}


# --- response ------------------------------------------------------------------


class MistralStreamDecoder(OpenAIChatDecoder):
    """Chat and FIM streams: OpenAI chat chunks whose `delta.content` may be a
    list of typed chunks, and whose finish may say `model_length` or `error`."""

    def __init__(self) -> None:
        super().__init__(PROVIDER)
        self._seen_calls: set[int] = set()

    def _choice(self, choice: JSON, events: list[Event]) -> None:
        delta = choice.get("delta")
        if delta and isinstance(delta.get("content"), list):
            # Read here; the rest of the delta (tool calls) is OpenAI's.
            _typed_content(delta.pop("content"), events)
        first = len(events)
        super()._choice(choice, events)
        if delta and delta.get("tool_calls"):
            self._identify_calls(events, first)
        if choice.get("finish_reason") == "error":
            # Generation failed on Mistral's side after the stream began.
            raise errors.upstream_http_error(
                PROVIDER, 500, "generation failed (finish_reason: error)"
            )

    def _identify_calls(self, events: list[Event], first: int) -> None:
        """Give a call that came without an id a stable one, `call_<index>`
        (Mistral's calls normally carry theirs)."""
        for position in range(first, len(events)):
            event = events[position]
            if isinstance(event, ToolCallDelta) and event.index not in self._seen_calls:
                self._seen_calls.add(event.index)
                if not event.id:
                    events[position] = dataclasses.replace(event, id=f"call_{event.index}")


def _typed_content(chunks: list[Any], events: list[Event]) -> None:
    """Magistral's content: `thinking` chunks (their own list of text chunks)
    and `text` chunks; references and other kinds carry no text to stream."""
    for chunk in chunks:
        kind = chunk.get("type")
        if kind == "thinking":
            for part in chunk.get("thinking") or ():
                if part.get("type") == "text" and (text := part.get("text")):
                    events.append(ReasoningDelta(text))
        elif kind == "text" and (text := chunk.get("text")):
            events.append(TextDelta(text))


def _error_message(payload: JSON) -> tuple[str, str]:
    """The message and type of an error body. Mistral sends
    {"object": "error", "message": ..., "type": ..., "param": ..., "code": ...}
    where `message` may itself be a validation result {"detail": [...]}; its
    API gateway and validator send {"message": ...} or {"detail": ...} alone."""
    message = payload.get("message")
    if isinstance(message, dict):
        return _validation_message(message.get("detail")), str(payload.get("type") or "")
    if message:
        return describe_error(payload)
    return _validation_message(payload.get("detail")), ""


def _validation_message(detail: object) -> str:
    """FastAPI's `detail`: a string, or a list of {"loc", "msg", "type"}."""
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, list):
        return ""
    problems = []
    for item in detail:
        if not isinstance(item, dict):
            continue
        location = [str(step) for step in item.get("loc") or ()]
        if location[:1] == ["body"]:
            location = location[1:]
        message = str(item.get("msg") or "")
        problems.append(f"{'.'.join(location)}: {message}" if location else message)
    return "; ".join(problems)
