"""Amazon Bedrock Runtime: Converse for chat and completions, InvokeModel for
embeddings.

Chat and completions call ConverseStream (`POST /model/{modelId}/converse-stream`).
Its answer is an AWS eventstream: binary frames (prelude, headers, payload,
CRC32s) whose `:event-type` header names a JSON payload -- `messageStart`,
per content block `contentBlockStart` (tool calls only), `contentBlockDelta`*
and `contentBlockStop`, then `messageStop` (stop reason) and `metadata`
(usage), after which the body ends. A frame of `:message-type` `exception`
replaces the rest of the stream. Embeddings call InvokeModel
(`POST /model/{modelId}/invoke`) with the body of the model's family.

Requests are signed with SigV4 (signing name "bedrock") by botocore over the
exact body bytes sent, or carry a Bedrock API key as a bearer token.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import orjson
from botocore.utils import percent_encode
from pydantic import model_validator

from sluice import errors
from sluice.domain import (
    CacheTtl,
    ChatRequest,
    EmbeddingRequest,
    Embeddings,
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
    Start,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)
from sluice.errors import GatewayError, Reason
from sluice.providers.aws import AwsCredentials, SigV4Signer, aws_json_request
from sluice.providers.base import (
    EmbeddingDecoder,
    ErrorFields,
    ExchangeObserver,
    HttpAdapter,
    StreamDecoder,
)
from sluice.providers.bounds import DEFAULT_BOUNDS, BodyBounds
from sluice.providers.eventstream import EventStreamDecoder
from sluice.providers.features import Feature, thinking_budget
from sluice.providers.http import UpstreamRequest
from sluice.providers.settings import ProviderSettings
from sluice.providers.wire import (
    JSON,
    MAX_ERROR_TEXT,
    alternating_turns,
    quoted_body,
    tool_call_arguments,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping, Sequence

    from botocore.eventstream import EventStreamMessage

    from sluice.providers.http import UpstreamClient

PROVIDER = "bedrock"
SIGNING_NAME = "bedrock"  # the service model's signingName (the host says bedrock-runtime)

EmbeddingFormat = Literal["titan", "cohere"]


class BedrockAdapter(HttpAdapter):
    provider = PROVIDER

    def __init__(
        self,
        settings: BedrockSettings,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        super().__init__(client, connect_timeout=connect_timeout, bounds=bounds)
        self._model = settings.name
        # One path segment however many ':' and '/' the id holds (ARNs), encoded
        # as botocore does; SigV4 signs this path as sent.
        model_url = f"{settings.base_url}/model/{percent_encode(settings.name)}"
        self._converse_url = f"{model_url}/converse-stream"
        self._invoke_url = f"{model_url}/invoke"
        self._embedding_format = settings.embedding_format or _embedding_format(settings.name)
        self._headers = {"content-type": "application/json"}
        self._signer: SigV4Signer | None = None  # None with an API key
        if settings.key:
            self._headers["authorization"] = f"Bearer {settings.key}"
        else:
            assert settings.region is not None  # checked by the settings
            self._signer = SigV4Signer(PROVIDER, SIGNING_NAME, settings.region, settings)

    def stream(
        self,
        request: Request,
        *,
        observer: ExchangeObserver | None = None,
        coalesce_within: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        if isinstance(request, EmbeddingRequest) and self._embedding_format == "titan":
            return self._embed_one_by_one(request, observer)
        return super().stream(request, observer=observer, coalesce_within=coalesce_within)

    async def _embed_one_by_one(
        self, request: EmbeddingRequest, observer: ExchangeObserver | None
    ) -> AsyncGenerator[Event, None]:
        """Titan embeds one text per call: one call per input, in order (kept
        sequential for simplicity), merged into one answer."""
        vectors: list[tuple[float, ...]] = []
        input_tokens = 0
        for text in request.inputs:
            async for event in super().stream(
                dataclasses.replace(request, inputs=(text,)), observer=observer
            ):
                if isinstance(event, Embeddings):
                    vectors.extend(event.vectors)
                elif isinstance(event, Usage):
                    input_tokens += event.input_tokens
        yield Start("", self._model)
        yield Embeddings(tuple(vectors))
        yield Usage(input_tokens=input_tokens)
        yield Finish(FinishReason.STOP)

    def build(self, request: Request) -> UpstreamRequest:
        if isinstance(request, EmbeddingRequest):
            return self._signed(self._invoke_url, self._embedding_body(request))
        if isinstance(request, ChatRequest):
            body = _chat_body(request)
        else:
            if request.suffix:
                raise errors.invalid_argument("suffix", "bedrock has no fill-in-the-middle")
            body = {"messages": [{"role": "user", "content": [{"text": request.prompt}]}]}
        body.update(_generation(request.generation))
        # Before signing: the signature covers the merged body.
        return self._signed(self._converse_url, self.with_options(request, body))

    def decoder(self, request: Request) -> StreamDecoder:
        if isinstance(request, EmbeddingRequest):
            return BedrockEmbeddingDecoder(self._model, titan=self._embedding_format == "titan")
        # A completion answer has no place for reasoning.
        return BedrockStreamDecoder(self._model, reasoning=isinstance(request, ChatRequest))

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        # "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
        error_type = headers.get("x-amzn-errortype", "").partition(":")[0]
        message = ""
        if isinstance(payload, dict):
            # AWS JSON errors say message or Message, and may name the type in __type.
            message = str(payload.get("message") or payload.get("Message") or "")
            error_type = error_type or str(payload.get("__type") or "").rpartition("#")[2]
        return ErrorFields(message, error_type, headers.get("x-amzn-requestid", ""))

    def _embedding_body(self, request: EmbeddingRequest) -> JSON:
        body: JSON
        if self._embedding_format == "titan":
            if len(request.inputs) != 1:
                raise ValueError("titan embeds one input per call: stream() splits the request")
            body = {"inputText": request.inputs[0]}
            if request.dimensions is not None:
                body["dimensions"] = request.dimensions
        elif self._embedding_format == "cohere":
            body = {"texts": list(request.inputs), "input_type": "search_document"}
            if request.dimensions is not None:
                body["output_dimension"] = request.dimensions  # Embed v4 only
        else:
            raise GatewayError(
                Reason.UNSUPPORTED_MODEL,
                f"bedrock: no embeddings body known for model {self._model!r}; "
                "set embedding_format (titan or cohere)",
                metadata={"provider": PROVIDER},
            )
        return body

    def _signed(self, url: str, body: JSON) -> UpstreamRequest:
        """The request, SigV4-signed unless it carries an API key."""
        return aws_json_request(url, body, self._headers, self._signer)


class BedrockSettings(ProviderSettings, AwsCredentials):
    operations: ClassVar[frozenset[Operation]] = frozenset(
        {Operation.CHAT, Operation.COMPLETION, Operation.EMBEDDING}
    )
    default_api_base: ClassVar[str] = "https://bedrock-runtime.{region}.amazonaws.com"
    adapter = BedrockAdapter
    # Converse has no JSON mode without a schema, and no end-user field.
    features = frozenset({Feature.JSON_SCHEMA, Feature.REASONING_EFFORT, Feature.PROVIDER_OPTIONS})
    otel_name = "aws.bedrock"
    mlflow_names = ("bedrock", "amazon-bedrock")

    provider: Literal["bedrock"]
    # region, aws_access_key_id, aws_secret_access_key, aws_session_token
    # (AwsCredentials): without api_key or keys, the standard AWS chain applies.
    # The InvokeModel body an embeddings route sends; by default from the model
    # id, which an ARN of a provisioned or custom model does not show.
    embedding_format: EmbeddingFormat | None = None

    @model_validator(mode="after")
    def _check_auth_and_region(self) -> BedrockSettings:
        if self.api_key and (self.has_aws_keys or self.aws_session_token):
            raise ValueError("give api_key (a Bedrock API key) or AWS credentials, not both")
        if not self.region:
            if not self.api_base:
                raise ValueError("region is required unless api_base is given")
            if not self.api_key:
                raise ValueError("region is required to sign requests (SigV4)")
        return self

    @property
    def base_url(self) -> str:
        return (self.api_base or self.default_api_base.format(region=self.region)).rstrip("/")

    @classmethod
    def vendor_model(cls, provider: str, model: str) -> tuple[str, str] | None:
        """Model ids name their vendor: `[region.]vendor.model`, with `us.`,
        `eu.`, `global.`... for cross-region inference."""
        parts = model.split(".")
        for index, part in enumerate(parts[:2]):
            if part in _PRICED_VENDORS:
                return part, ".".join(parts[index + 1 :])
        return None


# Vendor prefixes of model ids ("anthropic.claude-...") whose list prices apply.
_PRICED_VENDORS = frozenset({"anthropic", "mistral", "cohere"})


def _embedding_format(model: str) -> EmbeddingFormat | None:
    # Base ids, inference profiles ("us.cohere.embed-v4:0") and foundation-model ARNs.
    if "amazon.titan-embed-text" in model:
        return "titan"
    if "cohere.embed" in model:
        return "cohere"
    return None


# --- request -------------------------------------------------------------------


def _chat_body(request: ChatRequest) -> JSON:
    system, messages = _messages(request.messages)
    body: JSON = {"messages": messages}
    if system:
        body["system"] = system
    if request.tools and not _tools_off(request):
        tools = [
            entry
            for tool in request.tools
            for entry in _with_cache_point(
                _tool_spec(tool.name, tool.description, tool.parameters), tool.cache
            )
        ]
        config: JSON = {"tools": tools}
        choice = request.tool_choice
        if choice is not None and choice.tool_name:
            config["toolChoice"] = {"tool": {"name": choice.tool_name}}
        elif choice is not None and choice.mode is ToolChoiceMode.REQUIRED:
            config["toolChoice"] = {"any": {}}
        elif choice is not None and choice.mode is ToolChoiceMode.AUTO:
            config["toolChoice"] = {"auto": {}}
        body["toolConfig"] = config
    if request.response_format is not None and (
        request.response_format.type is ResponseFormatType.JSON_SCHEMA
    ):
        body["outputConfig"] = {"textFormat": _text_format(request.response_format)}
    return body


def _text_format(format: ResponseFormat) -> JSON:
    """Converse structured output: the schema as a JSON string."""
    definition = {
        "schema": json.dumps(dict(format.schema), separators=(",", ":")),
        "name": format.schema_name,
    }
    return {"type": "json_schema", "structure": {"jsonSchema": definition}}


def _tools_off(request: ChatRequest) -> bool:
    """Converse has no "none" tool choice: such a request sends no tools. But
    Bedrock requires toolConfig when the conversation holds tool calls or
    results; then the tools go without a choice (auto), the nearest it allows."""
    choice = request.tool_choice
    if choice is None or choice.tool_name or choice.mode is not ToolChoiceMode.NONE:
        return False
    return not any(
        isinstance(part, ToolCallPart | ToolResultPart)
        for message in request.messages
        for part in message.parts
    )


def _tool_spec(name: str, description: str, parameters: Mapping[str, Any]) -> JSON:
    # An input schema is required, and an empty description is rejected.
    schema = dict(parameters) or {"type": "object", "properties": {}}
    spec: JSON = {"name": name, "inputSchema": {"json": schema}}
    if description:
        spec["description"] = description
    return {"toolSpec": spec}


def _messages(messages: Sequence[Message]) -> tuple[list[JSON], list[JSON]]:
    """System text blocks, and the conversation: Converse wants user and
    assistant turns to alternate, and tool results answer an assistant turn
    as one user turn."""
    system, turns = alternating_turns(messages)
    blocks = [
        block for part in system for block in _with_cache_point({"text": part.text}, part.cache)
    ]
    return blocks, [
        {
            "role": "assistant" if turn.assistant else "user",
            "content": [
                block
                for part, field in turn.parts
                # Unsigned reasoning (another provider's) is not Bedrock's to verify: left out.
                if not (
                    isinstance(part, ReasoningPart)
                    and not part.signature
                    and not part.redacted_data
                )
                for block in _with_cache_point(_block(part, field), part.cache)
            ],
        }
        for turn in turns
    ]


def _with_cache_point(block: JSON, cache: CacheTtl | None) -> list[JSON]:
    """`block`, and a cachePoint block after it when it marks a breakpoint."""
    if cache is None:
        return [block]
    point = {"type": "default"}
    if cache is not CacheTtl.DEFAULT:
        point["ttl"] = cache.value  # CacheTTL: "5m" | "1h"
    return [block, {"cachePoint": point}]


_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _block(part: Part, field: str) -> JSON:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart):
        return {"image": _image(part, f"{field}.image")}
    if isinstance(part, ToolCallPart):
        tool_use = {
            "toolUseId": part.id,
            "name": part.name,
            "input": tool_call_arguments(part, field),
        }
        return {"toolUse": tool_use}
    if isinstance(part, ReasoningPart):
        return {"reasoningContent": _reasoning_content(part)}
    result: JSON = {"toolUseId": part.tool_call_id, "content": [{"text": part.content}]}
    if part.is_error:
        # Success is the default; only Nova and Claude models take a status at all.
        result["status"] = "error"
    return {"toolResult": result}


def _reasoning_content(part: ReasoningPart) -> JSON:
    if part.redacted_data:
        return {"redactedContent": part.redacted_data}  # a blob: base64 in JSON, as streamed
    return {"reasoningText": {"text": part.text, "signature": part.signature}}


def _image(part: ImagePart, field: str) -> JSON:
    if not part.data:
        raise errors.invalid_argument(field, "bedrock takes inline images only, not URLs")
    image_format = _IMAGE_FORMATS.get(part.media_type.lower())
    if image_format is None:
        raise errors.invalid_argument(
            field, f"bedrock takes png, jpeg, gif or webp images, not {part.media_type!r}"
        )
    data = base64.b64encode(part.data).decode("ascii")
    return {"format": image_format, "source": {"bytes": data}}


def _generation(params: GenerationParams) -> JSON:
    """The set parameters. top_k and reasoning have no Converse field: they go
    to the model as additionalModelRequestFields in Anthropic's names, which
    other model families may reject. Penalties and seed have no place at all."""
    inference = {
        key: value
        for key, value in (
            ("maxTokens", params.max_tokens),
            ("temperature", params.temperature),
            ("topP", params.top_p),
            ("stopSequences", list(params.stop) or None),
        )
        if value is not None
    }
    additional: JSON = {}
    if params.top_k is not None:
        additional["top_k"] = params.top_k
    if (budget := thinking_budget(params)) is not None:
        additional["thinking"] = (
            {"type": "enabled", "budget_tokens": budget} if budget else {"type": "disabled"}
        )
    fields: JSON = {}
    if inference:
        fields["inferenceConfig"] = inference
    if additional:
        fields["additionalModelRequestFields"] = additional
    return fields


# --- response ------------------------------------------------------------------

_FINISH_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "guardrail_intervened": FinishReason.CONTENT_FILTER,
    "content_filtered": FinishReason.CONTENT_FILTER,
}

# The HTTP status of each error (service model), by lowercased name: the
# x-amzn-errortype header says "ThrottlingException", a stream frame
# "throttlingException". An error in the stream maps like the same error before it.
_ERROR_STATUS = {
    "validationexception": 400,
    "servicequotaexceededexception": 400,
    "conflictexception": 400,
    "accessdeniedexception": 403,
    "resourcenotfoundexception": 404,
    "modeltimeoutexception": 408,
    "modelerrorexception": 424,
    "modelstreamerrorexception": 424,
    "throttlingexception": 429,
    "modelnotreadyexception": 429,
    "internalserverexception": 500,
    "serviceunavailableexception": 503,
}


class BedrockStreamDecoder(EventStreamDecoder):
    """Sans-I/O: ConverseStream eventstream bytes in, domain events out.

    Unknown event types and payload members (the `p` padding of every event)
    are skipped."""

    provider = PROVIDER

    def __init__(self, model: str, *, reasoning: bool = True) -> None:
        super().__init__()
        self._model = model  # the stream names neither its model nor an id
        self._reasoning = reasoning
        self._started = False
        # Content block index -> tool call index (tool blocks counted from 0).
        self._tool_calls: dict[int, int] = {}
        # Tool blocks with no arguments streamed yet: they get "{}" at their stop.
        self._without_arguments: set[int] = set()
        self._stop_reason: str | None = None
        self._usage: Usage | None = None

    def _end_of_body(self) -> list[Event]:
        missing = "messageStop" if self._stop_reason is None else "metadata"
        raise errors.upstream_protocol_error(PROVIDER, f"stream ended before {missing}")

    def _handle(self, frame: EventStreamMessage, events: list[Event]) -> None:
        headers = frame.headers
        if headers.get(":message-type") != "event":
            raise _not_an_event(headers, frame.payload)
        if not self._started:
            self._started = True
            events.append(Start("", self._model))
        kind = headers[":event-type"]
        payload = orjson.loads(frame.payload)
        if kind == "contentBlockDelta":  # by far the most frequent: first
            self._delta(payload["contentBlockIndex"], payload["delta"], events)
        elif kind == "contentBlockStart":
            self._start_block(payload, events)
        elif kind == "contentBlockStop":
            block = payload["contentBlockIndex"]
            if block in self._without_arguments:
                self._without_arguments.remove(block)
                events.append(ToolCallDelta(self._tool_calls[block], arguments="{}"))
        elif kind == "messageStop":
            self._stop_reason = payload["stopReason"]
            self._finish(events)
        elif kind == "metadata":
            self._usage = _usage(payload.get("usage"))
            self._finish(events)
        # messageStart and event types added later carry nothing for us.

    def _start_block(self, payload: JSON, events: list[Event]) -> None:
        """Only tool blocks start with something to say: the call's id and name."""
        tool_use = payload["start"].get("toolUse")
        if tool_use is not None:
            block = payload["contentBlockIndex"]
            tool_call = self._tool_calls[block] = len(self._tool_calls)
            self._without_arguments.add(block)
            events.append(ToolCallDelta(tool_call, tool_use["toolUseId"], tool_use["name"]))

    def _delta(self, block: int, delta: JSON, events: list[Event]) -> None:
        # Text blocks need no start: Nova sends none.
        if text := delta.get("text"):
            events.append(TextDelta(text))
        elif (tool_use := delta.get("toolUse")) is not None:
            tool_call = self._tool_calls.get(block)
            if tool_call is None:
                # A tool block whose start never came: Bedrock names no call id
                # then, so a deterministic one stands in; the name is unknown.
                tool_call = self._tool_calls[block] = len(self._tool_calls)
                events.append(ToolCallDelta(tool_call, f"call_{tool_call}"))
                self._without_arguments.add(block)
            if fragment := tool_use["input"]:
                self._without_arguments.discard(block)
                events.append(ToolCallDelta(tool_call, arguments=fragment))
        elif self._reasoning and (reasoning := delta.get("reasoningContent")):
            _reasoning_events(reasoning, events)

    def _finish(self, events: list[Event]) -> None:
        """The stream is complete once both messageStop and metadata came."""
        if self._stop_reason is None or self._usage is None:
            return
        self.done = True
        reason = _FINISH_REASONS.get(self._stop_reason, FinishReason.OTHER)
        if self._tool_calls and reason is FinishReason.STOP:
            reason = FinishReason.TOOL_CALLS
        events.append(self._usage)
        events.append(Finish(reason, self._stop_reason))


def _reasoning_events(reasoning: JSON, events: list[Event]) -> None:
    """A reasoningContent delta: text, the signature that ends its block, or
    a redacted block (base64 in JSON, passed on as it came)."""
    if text := reasoning.get("text"):
        events.append(ReasoningDelta(text))
    if signature := reasoning.get("signature"):
        events.append(ReasoningSignature(signature))
    if redacted := reasoning.get("redactedContent"):
        events.append(RedactedReasoning(redacted))


def _usage(usage: JSON | None) -> Usage:
    if not usage:
        return Usage(reported=False)
    cache_read = usage.get("cacheReadInputTokens") or 0
    cache_write = usage.get("cacheWriteInputTokens") or 0
    # inputTokens counts only the tokens neither read from nor written to the cache.
    return Usage(
        input_tokens=usage["inputTokens"] + cache_read + cache_write,
        output_tokens=usage["outputTokens"],
        cached_input_tokens=cache_read,
        cache_write_input_tokens=cache_write,
    )


def _not_an_event(headers: Mapping[str, Any], payload: bytes) -> Exception:
    """What a frame other than an event stands for: the upstream's error, or
    bad data (a ValueError)."""
    message_type = headers.get(":message-type")
    if message_type in ("exception", "error"):
        return _frame_error(headers, payload)
    return ValueError(f"unknown message type {message_type!r}")


def _frame_error(headers: Mapping[str, Any], payload: bytes) -> GatewayError:
    """The error of an `exception` frame (modeled, JSON payload) or an `error`
    frame (unmodeled, all in headers), mapped as its HTTP status would be."""
    if headers.get(":message-type") == "error":
        error_type = str(headers.get(":error-code") or "")
        message = str(headers.get(":error-message") or "")
    else:
        error_type = str(headers.get(":exception-type") or "")
        message = _exception_message(payload)
    return errors.upstream_http_error(
        PROVIDER,
        _ERROR_STATUS.get(error_type.lower(), 500),
        message or error_type or "error in stream",
        error_type=error_type,
    )


def _exception_message(payload: bytes) -> str:
    try:
        body = orjson.loads(payload)
    except ValueError:
        return quoted_body(payload)
    if not isinstance(body, dict):
        return str(body)[:MAX_ERROR_TEXT]
    message = str(body.get("message") or "")
    # modelStreamErrorException also says what the model itself answered.
    original = [
        str(body[key]) for key in ("originalStatusCode", "originalMessage") if body.get(key)
    ]
    return f"{message} (model answered {': '.join(original)})" if original else message


class BedrockEmbeddingDecoder(EmbeddingDecoder):
    """The InvokeModel answer of a Titan or Cohere embeddings model."""

    def __init__(self, model: str, *, titan: bool) -> None:
        super().__init__(PROVIDER)
        self._model = model
        self._titan = titan  # else Cohere

    def _read(self, payload: JSON) -> tuple[Start, Embeddings, Usage]:
        if self._titan:
            vectors: tuple[tuple[float, ...], ...] = (tuple(payload["embedding"]),)
            usage = Usage(input_tokens=payload["inputTextTokenCount"])
        else:
            embeddings = payload["embeddings"]
            if isinstance(embeddings, dict):  # asked for by type (embedding_types)
                embeddings = embeddings["float"]
            vectors = tuple(tuple(vector) for vector in embeddings)
            # Cohere's body counts no tokens.
            usage = Usage(reported=False)
        return Start(payload.get("id") or "", self._model), Embeddings(vectors), usage
