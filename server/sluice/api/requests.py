"""Proto requests -> domain requests, validated: a bad field, or one over a
bound (request_bounds.py), is an INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import orjson
from google.protobuf import json_format, struct_pb2

from sluice import domain
from sluice.api.request_bounds import RequestBounds
from sluice.config.schema import RequestLimits
from sluice.errors import invalid_argument, truncated
from sluice.providers.options import reserved
from sluice.providers.registry import PROVIDERS
from sluice_client.v1 import gateway_pb2 as pb

DEFAULT_LIMITS = RequestLimits()

_ROLES = {
    pb.ROLE_SYSTEM: domain.Role.SYSTEM,
    pb.ROLE_USER: domain.Role.USER,
    pb.ROLE_ASSISTANT: domain.Role.ASSISTANT,
    pb.ROLE_TOOL: domain.Role.TOOL,
}
_REASONING_EFFORTS = {
    pb.REASONING_EFFORT_MINIMAL: domain.ReasoningEffort.MINIMAL,
    pb.REASONING_EFFORT_LOW: domain.ReasoningEffort.LOW,
    pb.REASONING_EFFORT_MEDIUM: domain.ReasoningEffort.MEDIUM,
    pb.REASONING_EFFORT_HIGH: domain.ReasoningEffort.HIGH,
}
_RESPONSE_FORMAT_TYPES = {
    pb.RESPONSE_FORMAT_TYPE_TEXT: domain.ResponseFormatType.TEXT,
    pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT: domain.ResponseFormatType.JSON_OBJECT,
    pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: domain.ResponseFormatType.JSON_SCHEMA,
}
# A JSON Schema's name as OpenAI takes it (the strictest of the providers).
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOOL_CHOICE_MODES = {
    pb.TOOL_CHOICE_MODE_AUTO: domain.ToolChoiceMode.AUTO,
    pb.TOOL_CHOICE_MODE_NONE: domain.ToolChoiceMode.NONE,
    pb.TOOL_CHOICE_MODE_REQUIRED: domain.ToolChoiceMode.REQUIRED,
}
# Which roles may carry which non-text parts.
_PART_ROLES = {
    "image": {domain.Role.USER},
    "tool_call": {domain.Role.ASSISTANT},
    "tool_result": {domain.Role.TOOL},
    "reasoning": {domain.Role.ASSISTANT},
}
# What an empty CacheControl converts to (frozen: one serves every call).
_UNSET_CACHE_CONTROL = domain.CacheControl()
_CACHE_TTLS = {
    pb.CACHE_TTL_UNSPECIFIED: domain.CacheTtl.DEFAULT,
    pb.CACHE_TTL_FIVE_MINUTES: domain.CacheTtl.FIVE_MINUTES,
    pb.CACHE_TTL_ONE_HOUR: domain.CacheTtl.ONE_HOUR,
}


def chat_request(
    request: pb.ChatRequest, limits: RequestLimits = DEFAULT_LIMITS
) -> domain.ChatRequest:
    bounds = RequestBounds(limits)
    _require_route(request.route)
    if not request.messages:
        raise invalid_argument("messages", "at least one message is required")
    bounds.count("messages", len(request.messages), limits.max_messages, "max_messages")
    bounds.count("tools", len(request.tools), limits.max_tools, "max_tools")
    bounds.labels(request.labels)
    bounds.name("end_user", request.end_user)
    bounds.variables(request.variables)
    tools = tuple(_tool(tool, f"tools[{i}]", bounds) for i, tool in enumerate(request.tools))
    return domain.ChatRequest(
        route=request.route,
        messages=tuple(
            _message(m, f"messages[{i}]", bounds) for i, m in enumerate(request.messages)
        ),
        generation=_generation(request.generation, bounds),
        tools=tools,
        tool_choice=_tool_choice(request, {tool.name for tool in tools}),
        labels=dict(request.labels),
        cache=_cache_control(request.cache),
        response_format=(
            _response_format(request.response_format, bounds)
            if request.HasField("response_format")
            else None
        ),
        provider_options=(
            _provider_options(request.provider_options, bounds)
            if request.HasField("provider_options")
            else {}
        ),
        end_user=request.end_user,
        variables=dict(request.variables),
    )


def completion_request(
    request: pb.CompleteRequest, limits: RequestLimits = DEFAULT_LIMITS
) -> domain.CompletionRequest:
    bounds = RequestBounds(limits)
    _require_route(request.route)
    if not request.prompt:
        raise invalid_argument("prompt", "prompt is empty")
    bounds.text("prompt", request.prompt)
    bounds.text("suffix", request.suffix)
    bounds.labels(request.labels)
    return domain.CompletionRequest(
        route=request.route,
        prompt=request.prompt,
        generation=_generation(request.generation, bounds),
        suffix=request.suffix,
        labels=dict(request.labels),
        cache=_cache_control(request.cache),
    )


def embedding_request(
    request: pb.EmbedRequest, limits: RequestLimits = DEFAULT_LIMITS
) -> domain.EmbeddingRequest:
    bounds = RequestBounds(limits)
    _require_route(request.route)
    if not request.inputs:
        raise invalid_argument("inputs", "at least one input is required")
    bounds.count("inputs", len(request.inputs), limits.max_inputs, "max_inputs")
    if request.HasField("dimensions"):
        bounds.dimensions(request.dimensions, len(request.inputs))
    for i, text in enumerate(request.inputs):
        bounds.text(f"inputs[{i}]", text)
    bounds.labels(request.labels)
    return domain.EmbeddingRequest(
        route=request.route,
        inputs=tuple(request.inputs),
        dimensions=request.dimensions if request.HasField("dimensions") else None,
        labels=dict(request.labels),
    )


def _cache_control(control: pb.CacheControl) -> domain.CacheControl:
    if not control.ListFields():
        return _UNSET_CACHE_CONTROL  # most calls leave the cache to the route
    if control.HasField("ttl") and control.ttl <= 0:
        raise invalid_argument("cache.ttl", "ttl must be positive")
    return domain.CacheControl(
        bypass=control.bypass,
        no_store=control.no_store,
        ttl=control.ttl if control.HasField("ttl") else None,
        semantic=control.semantic if control.HasField("semantic") else None,
    )


def _require_route(route: str) -> None:
    if not route:
        raise invalid_argument("route", "route is required")


def _message(message: pb.Message, field: str, bounds: RequestBounds) -> domain.Message:
    role = _ROLES.get(message.role)
    if role is None:
        raise invalid_argument(f"{field}.role", "role must be set")
    if not message.parts:
        raise invalid_argument(f"{field}.parts", "a message needs at least one part")
    bounds.count(f"{field}.parts", len(message.parts), bounds.limits.max_parts, "max_parts")
    bounds.name(f"{field}.name", message.name)
    parts = [_part(p, role, f"{field}.parts[{i}]", bounds) for i, p in enumerate(message.parts)]
    # A breakpoint on the message is one on its last part (which may set its own TTL).
    cache = _cache_breakpoint(message, field)
    if cache is not None and parts[-1].cache is None:
        parts[-1] = dataclasses.replace(parts[-1], cache=cache)
    return domain.Message(role=role, parts=tuple(parts), name=message.name)


def _cache_breakpoint(marked: pb.Message | pb.Part | pb.Tool, field: str) -> domain.CacheTtl | None:
    """The prompt-cache breakpoint `marked` sets, with its TTL; None if none."""
    ttl = _CACHE_TTLS.get(marked.cache_ttl)
    if ttl is None:
        raise invalid_argument(f"{field}.cache_ttl", f"unknown cache_ttl {marked.cache_ttl}")
    if not marked.cache_breakpoint:
        if ttl is not domain.CacheTtl.DEFAULT:
            raise invalid_argument(f"{field}.cache_ttl", "cache_ttl needs cache_breakpoint")
        return None
    return ttl


def _part(part: pb.Part, role: domain.Role, field: str, bounds: RequestBounds) -> domain.Part:
    content = _content(part, role, field, bounds)
    cache = _cache_breakpoint(part, field)
    return content if cache is None else dataclasses.replace(content, cache=cache)


def _content(part: pb.Part, role: domain.Role, field: str, bounds: RequestBounds) -> domain.Part:
    kind = part.WhichOneof("content")
    if kind is None:
        raise invalid_argument(field, "part has no content")
    if kind != "text" and role not in _PART_ROLES[kind]:
        raise invalid_argument(
            f"{field}.{kind}", f"{kind} parts are not allowed in {role.value} messages"
        )
    if kind == "text":
        bounds.text(f"{field}.text", part.text)
        return domain.TextPart(part.text)
    if kind == "image":
        return _image(part.image, f"{field}.image", bounds)
    if kind == "tool_call":
        return _tool_call(part.tool_call, f"{field}.tool_call", bounds)
    if kind == "reasoning":
        return _reasoning(part.reasoning, f"{field}.reasoning", bounds)
    result = part.tool_result
    if not result.tool_call_id:
        raise invalid_argument(f"{field}.tool_result.tool_call_id", "tool_call_id is required")
    bounds.name(f"{field}.tool_result.tool_call_id", result.tool_call_id)
    bounds.text(f"{field}.tool_result.content", result.content)
    return domain.ToolResultPart(
        tool_call_id=result.tool_call_id, content=result.content, is_error=result.is_error
    )


def _tool_call(call: pb.ToolCall, field: str, bounds: RequestBounds) -> domain.ToolCallPart:
    if not call.id or not call.name:
        raise invalid_argument(field, "tool call needs id and name")
    bounds.name(f"{field}.id", call.id)
    bounds.name(f"{field}.name", call.name)
    bounds.text(f"{field}.arguments", call.arguments)
    _require_json_object(call.arguments or "{}", f"{field}.arguments")
    # Opaque provider data, bounded with the request's text.
    bounds.text(f"{field}.signature", call.signature)
    return domain.ToolCallPart(
        id=call.id, name=call.name, arguments=call.arguments or "{}", signature=call.signature
    )


def _reasoning(reasoning: pb.Reasoning, field: str, bounds: RequestBounds) -> domain.ReasoningPart:
    if not (reasoning.text or reasoning.signature or reasoning.redacted_data):
        raise invalid_argument(field, "reasoning needs text, a signature or redacted_data")
    if reasoning.redacted_data and (reasoning.text or reasoning.signature):
        raise invalid_argument(
            f"{field}.redacted_data", "redacted reasoning has no text or signature of its own"
        )
    bounds.text(f"{field}.text", reasoning.text)
    bounds.text(f"{field}.signature", reasoning.signature)
    bounds.text(f"{field}.redacted_data", reasoning.redacted_data)
    return domain.ReasoningPart(
        text=reasoning.text, signature=reasoning.signature, redacted_data=reasoning.redacted_data
    )


def _image(image: pb.Image, field: str, bounds: RequestBounds) -> domain.ImagePart:
    source = image.WhichOneof("source")
    if source is None:
        raise invalid_argument(field, "image needs data or url")
    if source == "data" and not image.media_type:
        raise invalid_argument(f"{field}.media_type", "inline image needs media_type")
    bounds.name(f"{field}.media_type", image.media_type)
    size = len(image.data) if source == "data" else len(image.url.encode())
    bounds.size(f"{field}.{source}", size, bounds.limits.max_image_bytes, "max_image_bytes")
    return domain.ImagePart(data=image.data, url=image.url, media_type=image.media_type)


def _require_json_object(text: str, field: str) -> None:
    try:
        value = orjson.loads(text)  # unlike json, a bound on nesting, not a RecursionError
    except orjson.JSONDecodeError:
        raise invalid_argument(field, "arguments must be a JSON object") from None
    if not isinstance(value, dict):
        raise invalid_argument(field, "arguments must be a JSON object")
    RequestBounds.json_depth(field, value)


def _tool(tool: pb.Tool, field: str, bounds: RequestBounds) -> domain.Tool:
    if not tool.name:
        raise invalid_argument(f"{field}.name", "tool name is required")
    bounds.name(f"{field}.name", tool.name)
    bounds.size(field, tool.ByteSize(), bounds.limits.max_tool_bytes, "max_tool_bytes")
    parameters = _integral_floats_as_ints(_json(tool.parameters, f"{field}.parameters"))
    bounds.json_depth(f"{field}.parameters", parameters)
    return domain.Tool(
        name=tool.name,
        description=tool.description,
        parameters=parameters or {"type": "object", "properties": {}},
        cache=_cache_breakpoint(tool, field),
    )


def _json(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """`struct` as JSON; NaN and infinities, which JSON cannot hold, are the
    caller's error."""
    try:
        return json_format.MessageToDict(struct)
    except ValueError:
        raise invalid_argument(field, "NaN and infinities are not JSON numbers") from None


def _integral_floats_as_ints(value: Any) -> Any:
    """Struct stores every number as a double; JSON Schema wants `"minItems": 1`,
    not `1.0`."""
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _response_format(
    format: pb.ResponseFormat, bounds: RequestBounds
) -> domain.ResponseFormat | None:
    field = "response_format"
    bounds.size(
        field,
        format.ByteSize(),
        bounds.limits.max_response_format_bytes,
        "max_response_format_bytes",
    )
    kind = _RESPONSE_FORMAT_TYPES.get(format.type)
    if kind is None:
        raise invalid_argument(f"{field}.type", "type must be set")
    schema = _integral_floats_as_ints(json_format.MessageToDict(format.schema))
    bounds.json_depth(f"{field}.schema", schema)
    if kind is domain.ResponseFormatType.JSON_SCHEMA:
        if not schema:
            raise invalid_argument(f"{field}.schema", "JSON_SCHEMA needs a schema")
        name = format.schema_name or "response"
        if not _SCHEMA_NAME.fullmatch(name):
            raise invalid_argument(
                f"{field}.schema_name", "schema_name is 1-64 letters, digits, '_' or '-'"
            )
        return domain.ResponseFormat(kind, name, schema, format.strict)
    if schema or format.schema_name or format.strict:
        raise invalid_argument(field, "schema, schema_name and strict are for JSON_SCHEMA only")
    if kind is domain.ResponseFormatType.TEXT:
        return None  # free text is every provider's default: nothing to ask
    return domain.ResponseFormat(kind)


def _provider_options(
    options: struct_pb2.Struct, bounds: RequestBounds
) -> dict[str, dict[str, Any]]:
    """Each provider's entry, an object none of whose keys names what Sluice
    owns (options.py)."""
    field = "provider_options"
    bounds.size(
        field,
        options.ByteSize(),
        bounds.limits.max_provider_options_bytes,
        "max_provider_options_bytes",
    )
    value: dict[str, dict[str, Any]] = _integral_floats_as_ints(json_format.MessageToDict(options))
    bounds.json_depth(field, value)
    for provider, entry in value.items():
        if provider not in PROVIDERS:
            raise invalid_argument(
                f"{field}.{truncated(provider)}", f"{truncated(provider)!r} is no provider"
            )
        if not isinstance(entry, dict):
            raise invalid_argument(f"{field}.{provider}", "each provider's options are an object")
        if taken := sorted(key for key in entry if reserved(key)):
            raise invalid_argument(
                f"{field}.{provider}.{truncated(taken[0])}",
                f"provider options may not set {truncated(taken[0])!r}: the model, stream flag, "
                "credentials, headers and URL are the gateway's",
            )
    return value


def _tool_choice(request: pb.ChatRequest, tool_names: set[str]) -> domain.ToolChoice | None:
    choice = request.tool_choice.WhichOneof("choice") if request.HasField("tool_choice") else None
    if choice is None:
        return None
    if choice == "tool_name":
        if request.tool_choice.tool_name not in tool_names:
            raise invalid_argument(
                "tool_choice.tool_name",
                f"tool {truncated(request.tool_choice.tool_name)!r} is not among the "
                "request's tools",
            )
        return domain.ToolChoice(tool_name=request.tool_choice.tool_name)
    mode = _TOOL_CHOICE_MODES.get(request.tool_choice.mode)
    if mode is None:
        raise invalid_argument("tool_choice.mode", "mode must be set")
    if mode is domain.ToolChoiceMode.REQUIRED and not tool_names:
        raise invalid_argument("tool_choice.mode", "REQUIRED needs at least one tool")
    return domain.ToolChoice(mode=mode)


def _generation(config: pb.GenerationConfig, bounds: RequestBounds) -> domain.GenerationParams:
    fields = config.ListFields()
    if not fields:
        return domain.UNSET_GENERATION  # most calls set nothing: nothing to check
    limits = bounds.limits
    bounds.count(
        "generation.stop", len(config.stop), limits.max_stop_sequences, "max_stop_sequences"
    )
    for i, stop in enumerate(config.stop):
        bounds.text(f"generation.stop[{i}]", stop)
    present = {field.name: value for field, value in fields}
    params = domain.GenerationParams(
        max_tokens=present.get("max_tokens"),
        temperature=present.get("temperature"),
        top_p=present.get("top_p"),
        top_k=present.get("top_k"),
        stop=tuple(config.stop),
        presence_penalty=present.get("presence_penalty"),
        frequency_penalty=present.get("frequency_penalty"),
        seed=present.get("seed"),
        reasoning_budget_tokens=present.get("reasoning_budget_tokens"),
        reasoning_effort=_REASONING_EFFORTS.get(config.reasoning_effort),
    )
    _check_range("max_tokens", params.max_tokens, low=1)
    _check_range("temperature", params.temperature, low=0.0, high=2.0)
    _check_range("top_p", params.top_p, low=0.0, high=1.0)
    _check_range("top_k", params.top_k, low=1)
    _check_range("presence_penalty", params.presence_penalty, low=-2.0, high=2.0)
    _check_range("frequency_penalty", params.frequency_penalty, low=-2.0, high=2.0)
    _check_range("reasoning_budget_tokens", params.reasoning_budget_tokens, low=1)
    return params


def _check_range(name: str, value: float | None, *, low: float, high: float | None = None) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise invalid_argument(f"generation.{name}", f"{name} must be a finite number, got {value}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid_argument(f"generation.{name}", f"{name} must be {bounds}, got {value}")
