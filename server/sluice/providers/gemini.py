"""Google Gemini, through the Gemini API (AI Studio, `gemini`) or Vertex AI
(`vertex_ai`): one request and stream format at different URLs and auth.

Chat and completion calls stream: `:streamGenerateContent?alt=sse` answers
SSE (CRLF separators, no [DONE]) whose `data` is one GenerateContentResponse:
`candidates[0].content.parts` (text, text with `thought: true`, whole
`functionCall`s), cumulative `usageMetadata`, and a `finishReason` on the
last candidate. A prompt blocked before any answer has `promptFeedback.
blockReason` and no candidates; an error may replace a chunk as `{"error":
{code, message, status}}`. Embeddings answer with one JSON body:
`:batchEmbedContents` on the Gemini API, `:predict` on Vertex AI.
"""

from __future__ import annotations

import abc
import base64
import json
import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
from pydantic import Field

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
    ReasoningPart,
    ReasoningSignature,
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
from sluice.errors import GatewayError
from sluice.providers.base import (
    EmbeddingDecoder,
    ErrorFields,
    HttpAdapter,
    StreamDecoder,
)
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.features import Feature, thinking_budget
from sluice.providers.http import UpstreamRequest
from sluice.providers.settings import ProviderSettings
from sluice.providers.sse import SSEStreamDecoder
from sluice.providers.wire import JSON, alternating_turns, tool_call_arguments

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sluice.providers.http import UpstreamClient
    from sluice.providers.sse import SSEEvent

_OPERATIONS = frozenset({Operation.CHAT, Operation.COMPLETION, Operation.EMBEDDING})


class GoogleAdapter(HttpAdapter):
    """What both services share: chat, completion and errors. Subclasses give
    URLs, auth and the embeddings call, which differ."""

    def __init__(
        self,
        client: UpstreamClient,
        *,
        generate_url: str,
        embed_url: str,
        headers: dict[str, str],
        connect_timeout: float | None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(client, connect_timeout=connect_timeout, bounds=bounds)
        self._generate_url = generate_url
        self._embed_url = embed_url
        self._headers = headers

    def build(self, request: Request) -> UpstreamRequest:
        if isinstance(request, EmbeddingRequest):
            return UpstreamRequest(self._embed_url, self._embedding_body(request), self._headers)
        if isinstance(request, ChatRequest):
            body = _chat_body(request)
        else:
            body = _completion_body(request)
        return UpstreamRequest(self._generate_url, self.with_options(request, body), self._headers)

    def decoder(self, request: Request) -> StreamDecoder:
        if isinstance(request, EmbeddingRequest):
            return GoogleEmbeddingDecoder(self.provider, self._read_embeddings)
        return GoogleStreamDecoder(self.provider)

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        # Google sends no request id header (only server-timing, vary...).
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return ErrorFields()
        message, error_type = _describe(error)
        details = error.get("details")
        return ErrorFields(
            message,
            error_type,
            # Google answers a bad key with 400: it is our credential, not the caller's request.
            status=401 if _rejects_key(details) else None,
            retry_after=_retry_delay(details),
        )

    @abc.abstractmethod
    def _embedding_body(self, request: EmbeddingRequest) -> JSON: ...

    @staticmethod
    @abc.abstractmethod
    def _read_embeddings(payload: JSON) -> tuple[Embeddings, Usage]: ...


class GeminiAdapter(GoogleAdapter):
    provider = "gemini"

    def __init__(
        self,
        settings: GeminiSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        # Tuned models are named "tunedModels/..."; base models may come bare.
        self._model = settings.name if "/" in settings.name else f"models/{settings.name}"
        model_url = f"{settings.base_url}/v1beta/{self._model}"
        headers = {"content-type": "application/json"}
        # The header, not `?key=`: a URL reaches logs.
        if settings.key:
            headers["x-goog-api-key"] = settings.key
        super().__init__(
            client,
            generate_url=f"{model_url}:streamGenerateContent?alt=sse",
            embed_url=f"{model_url}:batchEmbedContents",
            headers=headers,
            connect_timeout=connect_timeout,
            bounds=bounds,
        )

    def _embedding_body(self, request: EmbeddingRequest) -> JSON:
        options: JSON = {"model": self._model}
        if request.dimensions is not None:
            options["outputDimensionality"] = request.dimensions
        return {
            "requests": [
                {**options, "content": {"parts": [{"text": text}]}} for text in request.inputs
            ]
        }

    @staticmethod
    def _read_embeddings(payload: JSON) -> tuple[Embeddings, Usage]:
        vectors = tuple(tuple(item["values"]) for item in payload["embeddings"])
        # batchEmbedContents reports no token counts.
        return Embeddings(vectors), Usage(reported=False)


class VertexAIAdapter(GoogleAdapter):
    provider = "vertex_ai"

    def __init__(
        self,
        settings: VertexAISettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        model_url = (
            f"{settings.base_url}/v1/projects/{settings.project}/locations/{settings.location}"
            f"/publishers/google/models/{settings.name}"
        )
        headers = {"content-type": "application/json"}
        if settings.key:
            headers["authorization"] = f"Bearer {settings.key}"
        super().__init__(
            client,
            generate_url=f"{model_url}:streamGenerateContent?alt=sse",
            embed_url=f"{model_url}:predict",
            headers=headers,
            connect_timeout=connect_timeout,
            bounds=bounds,
        )

    def _embedding_body(self, request: EmbeddingRequest) -> JSON:
        body: JSON = {"instances": [{"content": text} for text in request.inputs]}
        if request.dimensions is not None:
            body["parameters"] = {"outputDimensionality": request.dimensions}
        return body

    @staticmethod
    def _read_embeddings(payload: JSON) -> tuple[Embeddings, Usage]:
        embeddings = [prediction["embeddings"] for prediction in payload["predictions"]]
        vectors = tuple(tuple(embedding["values"]) for embedding in embeddings)
        counts = [
            (embedding.get("statistics") or {}).get("token_count") for embedding in embeddings
        ]
        usage = Usage(
            # A float in some answers: predict's output is a generic protobuf Value.
            input_tokens=sum(int(count) for count in counts if count is not None),
            reported=None not in counts,
        )
        return Embeddings(vectors), usage


# Google has no end-user field.
_FEATURES = frozenset(
    {Feature.JSON_OBJECT, Feature.JSON_SCHEMA, Feature.REASONING_EFFORT, Feature.PROVIDER_OPTIONS}
)


class GeminiSettings(ProviderSettings):
    operations: ClassVar[frozenset[Operation]] = _OPERATIONS
    # The google-genai SDK's base URL for the Gemini API.
    default_api_base: ClassVar[str] = "https://generativelanguage.googleapis.com"
    adapter = GeminiAdapter
    features = _FEATURES
    otel_name = "gcp.gemini"
    mlflow_names = ("gemini",)

    provider: Literal["gemini"]


class VertexAISettings(ProviderSettings):
    """`api_key` is an OAuth access token (`gcloud auth print-access-token`):
    short-lived, and the gateway does not refresh it."""

    operations: ClassVar[frozenset[Operation]] = _OPERATIONS
    adapter = VertexAIAdapter
    features = _FEATURES
    otel_name = "gcp.vertex_ai"
    # Vertex AI serves the Gemini models under their Gemini API names.
    price_vendor = "gemini"

    provider: Literal["vertex_ai"]
    # Both go into the URL (the location into its host name): checked to stay there.
    project: str = Field(pattern=r"^[a-z0-9][a-z0-9.:-]*$")
    location: str = Field(default="us-central1", pattern=r"^[a-z0-9-]+$")

    @property
    def base_url(self) -> str:
        """The SDK's: regional endpoints are `{location}-aiplatform`, `global` has none."""
        if self.api_base:
            return self.api_base.rstrip("/")
        if self.location == "global":
            return "https://aiplatform.googleapis.com"
        return f"https://{self.location}-aiplatform.googleapis.com"


# --- request -------------------------------------------------------------------

# Google's documented stand-in for a thought signature the caller does not
# have (a conversation begun with another provider): Gemini 3 rejects a
# replayed function call turn whose calls all lack one.
_NO_THOUGHT_SIGNATURE = "skip_thought_signature_validator"

# The tool call ids GoogleStreamDecoder makes up for calls that came without one.
_MADE_UP_CALL_ID = re.compile(r"call_\d+")

_CALLING_MODES = {
    ToolChoiceMode.AUTO: "AUTO",
    ToolChoiceMode.NONE: "NONE",
    ToolChoiceMode.REQUIRED: "ANY",
}


def _chat_body(request: ChatRequest) -> JSON:
    system, contents = _contents(request.messages)
    body: JSON = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(tool) for tool in request.tools]}]
    if request.tool_choice is not None:
        body["toolConfig"] = {"functionCallingConfig": _calling_config(request.tool_choice)}
    config = _generation_config(request.generation)
    if request.response_format is not None:
        config.update(_response_config(request.response_format))
    if config:
        body["generationConfig"] = config
    return body


def _response_config(format: ResponseFormat) -> JSON:
    """Structured output: JSON as the MIME type, and the schema as JSON
    Schema (`responseJsonSchema`; `responseSchema` takes only an OpenAPI subset)."""
    if format.type is ResponseFormatType.TEXT:
        return {}
    config: JSON = {"responseMimeType": "application/json"}
    if format.type is ResponseFormatType.JSON_SCHEMA:
        config["responseJsonSchema"] = dict(format.schema)
    return config


def _completion_body(request: CompletionRequest) -> JSON:
    """A completion is a one-turn chat: Gemini has no raw-prompt endpoint."""
    if request.suffix:
        raise errors.invalid_argument("suffix", "Gemini does not support a suffix")
    body: JSON = {"contents": [{"role": "user", "parts": [{"text": request.prompt}]}]}
    if config := _generation_config(request.generation):
        body["generationConfig"] = config
    return body


def _contents(messages: Sequence[Message]) -> tuple[list[JSON], list[JSON]]:
    """System text parts, and the turns: the results of parallel calls must
    answer in one turn."""
    system, turns = alternating_turns(messages)
    call_names: dict[str, str] = {}  # tool call id -> function name
    contents: list[JSON] = []
    for turn in turns:
        parts: list[JSON] = []
        for part, field in turn.parts:
            if isinstance(part, TextPart):
                parts.append({"text": part.text})
            elif isinstance(part, ImagePart):
                parts.append(_image(part, f"{field}.image"))
            elif isinstance(part, ToolCallPart):
                call_names[part.id] = part.name
                parts.append(_signed({"functionCall": _function_call(part, field)}, part.signature))
            elif isinstance(part, ReasoningPart):
                _add_reasoning(parts, part)
            else:
                parts.append({"functionResponse": _function_response(part, call_names, field)})
        if turn.assistant:
            _vouch_for_unsigned_calls(parts)
        contents.append({"role": "model" if turn.assistant else "user", "parts": parts})
    return [{"text": part.text} for part in system], contents


def _signed(part: JSON, signature: str) -> JSON:
    if signature:
        part["thoughtSignature"] = signature
    return part


def _add_reasoning(parts: list[JSON], reasoning: ReasoningPart) -> None:
    """A thought part as it streamed. A signature with no text came on the
    part before it (GoogleStreamDecoder streams it after that part's text):
    it goes back there. Redacted reasoning is Anthropic's and Bedrock's: left out."""
    if reasoning.text:
        parts.append(_signed({"text": reasoning.text, "thought": True}, reasoning.signature))
    elif reasoning.signature:
        if parts and "thoughtSignature" not in parts[-1]:
            parts[-1]["thoughtSignature"] = reasoning.signature
        else:
            parts.append({"text": "", "thoughtSignature": reasoning.signature})


def _vouch_for_unsigned_calls(parts: list[JSON]) -> None:
    """Gemini signs the first of parallel calls only, so unsigned calls
    beside a signed one stay unsigned; a turn of calls none of which is
    signed came from elsewhere, and gets the documented stand-in."""
    calls = [part for part in parts if "functionCall" in part]
    if not any("thoughtSignature" in call for call in calls):
        for call in calls:
            call["thoughtSignature"] = _NO_THOUGHT_SIGNATURE


def _image(part: ImagePart, field: str) -> JSON:
    if not part.media_type:
        raise errors.invalid_argument(field, "Gemini needs the media type of an image")
    if part.data:
        data = base64.b64encode(part.data).decode("ascii")
        return {"inlineData": {"mimeType": part.media_type, "data": data}}
    return {"fileData": {"mimeType": part.media_type, "fileUri": part.url}}


def _is_gemini_call_id(call_id: str) -> bool:
    """Gemini 3 names its calls and wants the names back; a made-up id was
    never the model's, and endpoints without call ids reject the field."""
    return bool(call_id) and not _MADE_UP_CALL_ID.fullmatch(call_id)


def _function_call(part: ToolCallPart, field: str) -> JSON:
    call: JSON = {"name": part.name, "args": tool_call_arguments(part, field)}
    if _is_gemini_call_id(part.id):
        call["id"] = part.id
    return call


def _function_response(part: ToolResultPart, call_names: Mapping[str, str], field: str) -> JSON:
    # Gemini matches a result to its call by function name.
    name = call_names.get(part.tool_call_id)
    if name is None:
        raise errors.invalid_argument(
            f"{field}.tool_result.tool_call_id",
            f"no earlier tool call has the id {part.tool_call_id!r}",
        )
    response: JSON = {"name": name, "response": _response(part)}
    if _is_gemini_call_id(part.tool_call_id):
        response["id"] = part.tool_call_id
    return response


def _response(part: ToolResultPart) -> JSON:
    """The result as the JSON object Gemini wants: the content itself if it
    is one, else under "output" (or "error"), the keys its docs name."""
    value = _json_object(part.content)
    if part.is_error:
        return {"error": part.content if value is None else value}
    return {"output": part.content} if value is None else value


def _json_object(text: str) -> JSON | None:
    if not text.lstrip().startswith("{"):  # most results are plain text: skip the parse
        return None
    try:
        value = orjson.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _declaration(tool: Tool) -> JSON:
    declaration: JSON = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    # Full JSON Schema; `parameters` takes only Google's OpenAPI subset.
    if tool.parameters:
        declaration["parametersJsonSchema"] = dict(tool.parameters)
    return declaration


def _calling_config(choice: ToolChoice) -> JSON:
    if choice.tool_name:
        return {"mode": "ANY", "allowedFunctionNames": [choice.tool_name]}
    return {"mode": _CALLING_MODES[choice.mode or ToolChoiceMode.AUTO]}


def _generation_config(params: GenerationParams) -> JSON:
    fields: JSON = {
        "maxOutputTokens": params.max_tokens,
        "temperature": params.temperature,
        "topP": params.top_p,
        "topK": params.top_k,
        "stopSequences": list(params.stop) or None,
        "presencePenalty": params.presence_penalty,
        "frequencyPenalty": params.frequency_penalty,
        "seed": params.seed,
    }
    config = {key: value for key, value in fields.items() if value is not None}
    budget = thinking_budget(params)
    if budget is not None:
        # Without includeThoughts the model thinks but streams none of it.
        config["thinkingConfig"] = (
            {"thinkingBudget": budget, "includeThoughts": True} if budget else {"thinkingBudget": 0}
        )
    return config


# --- response ------------------------------------------------------------------

_FINISH_REASONS = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    **dict.fromkeys(
        (
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
            "IMAGE_RECITATION",
            "LANGUAGE",
            "MODEL_ARMOR",
        ),
        FinishReason.CONTENT_FILTER,
    ),
}


class GoogleStreamDecoder(SSEStreamDecoder):
    """Sans-I/O: streamGenerateContent SSE bytes in, domain events out."""

    def __init__(self, provider: str) -> None:
        super().__init__()
        self.provider = provider
        self._started = False
        self._tool_calls = 0
        # Cumulative: the last report holds the totals.
        self._usage: JSON | None = None
        self._finish_reason: str | None = None
        self._block_reason = ""

    def _handle(self, sse: SSEEvent, events: list[Event]) -> None:
        chunk = orjson.loads(sse.data)
        if error := chunk.get("error"):
            raise _stream_error(error, self.provider)
        if not self._started:
            self._started = True
            events.append(Start(chunk.get("responseId") or "", chunk.get("modelVersion") or ""))
        if usage := chunk.get("usageMetadata"):
            self._usage = usage
        candidates = chunk.get("candidates")
        if not candidates:
            if feedback := chunk.get("promptFeedback"):
                self._block_reason = feedback.get("blockReason") or ""
            return
        # Sluice never asks for several candidates: the first is the answer.
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            self._part(part, events)
        if reason := candidate.get("finishReason"):
            self._finish_reason = reason

    def _part(self, part: JSON, events: list[Event]) -> None:
        signature = part.get("thoughtSignature") or ""
        if call := part.get("functionCall"):
            index = self._tool_calls
            self._tool_calls += 1
            # Gemini before 3 sends no call id: a deterministic one stands in.
            call_id = call.get("id") or f"call_{index}"
            arguments = json.dumps(call.get("args") or {})
            events.append(ToolCallDelta(index, call_id, call["name"], arguments, signature))
            return
        if text := part.get("text"):
            events.append(ReasoningDelta(text) if part.get("thought") else TextDelta(text))
        if signature:
            # It signs the part just streamed (or one of empty text): a reasoning block's end.
            events.append(ReasoningSignature(signature))

    def _end_of_body(self) -> list[Event]:
        # Gemini's SSE has no terminal event: the chunk with the finish reason
        # may be followed by one with the last usage, and the body's end is
        # the stream's end (`done` stays false).
        if self._finish_reason is None:
            if self._block_reason:
                return [
                    self._usage_event(),
                    Finish(FinishReason.CONTENT_FILTER, self._block_reason),
                ]
            raise errors.upstream_protocol_error(
                self.provider, "stream ended without a finishReason"
            )
        reason = _FINISH_REASONS.get(self._finish_reason, FinishReason.OTHER)
        if reason is FinishReason.STOP and self._tool_calls:
            reason = FinishReason.TOOL_CALLS
        return [self._usage_event(), Finish(reason, self._finish_reason)]

    def _usage_event(self) -> Usage:
        usage = self._usage
        if usage is None:
            return Usage(reported=False)
        thoughts = usage.get("thoughtsTokenCount") or 0
        return Usage(
            # Tokens of tool use (search results...) are input the model read.
            input_tokens=(usage.get("promptTokenCount") or 0)
            + (usage.get("toolUsePromptTokenCount") or 0),
            output_tokens=(usage.get("candidatesTokenCount") or 0) + thoughts,
            cached_input_tokens=usage.get("cachedContentTokenCount") or 0,
            reasoning_tokens=thoughts,
        )


class GoogleEmbeddingDecoder(EmbeddingDecoder):
    def __init__(self, provider: str, read: Callable[[JSON], tuple[Embeddings, Usage]]) -> None:
        super().__init__(provider)
        self._read_answer = read

    def _read(self, payload: JSON) -> tuple[Start, Embeddings, Usage]:
        if error := payload.get("error"):
            raise _stream_error(error, self.provider)
        return (Start("", ""), *self._read_answer(payload))


def _describe(error: JSON) -> tuple[str, str]:
    """The message and type (the google.rpc status name) of an error object."""
    return str(error.get("message") or ""), str(error.get("status") or "")


def _stream_error(error: JSON, provider: str) -> GatewayError:
    """An error object in a 200 answer, mapped by the HTTP status in its code."""
    message, error_type = _describe(error)
    code = error.get("code")
    if not (isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599):
        code = 500
    return errors.upstream_http_error(
        provider,
        code,
        message or error_type or "error in stream",
        error_type=error_type,
    )


def _rejects_key(details: object) -> bool:
    """Whether google.rpc.ErrorInfo details say the API key is invalid or expired."""
    return isinstance(details, list) and any(
        isinstance(detail, dict)
        and detail.get("@type", "").endswith("google.rpc.ErrorInfo")
        and detail.get("reason") in ("API_KEY_INVALID", "API_KEY_EXPIRED")
        for detail in details
    )


def _retry_delay(details: object) -> float | None:
    """The google.rpc.RetryInfo delay ("37s") of a 429's details, if any."""
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, dict) and detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            try:
                return max(float(str(delay).removesuffix("s")), 0.0)
            except ValueError:
                return None
    return None
