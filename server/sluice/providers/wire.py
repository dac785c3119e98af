"""Helpers for building provider requests and reading their answers: the
pieces several wire formats share, each with no I/O."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sluice.domain import (
    GenerationParams,
    ImagePart,
    Message,
    Part,
    Role,
    TextPart,
    ToolCallPart,
)
from sluice.errors import invalid_argument

# A JSON object as providers send and take it.
JSON = dict[str, Any]

MAX_ERROR_TEXT = 500  # characters of a non-JSON error body worth quoting


@dataclass(frozen=True, slots=True)
class Turn:
    """One side's turn: each part with its request field path."""

    assistant: bool
    parts: list[tuple[Part, str]]


def alternating_turns(messages: Sequence[Message]) -> tuple[list[TextPart], list[Turn]]:
    """System text parts, and the conversation as alternating user/assistant turns,
    for APIs that want them so (Anthropic, Bedrock, Gemini): consecutive
    messages of one side merge, tool results answer on the user's side, and
    empty text parts, which these APIs reject, are dropped."""
    system: list[TextPart] = []
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        if message.role is Role.SYSTEM:
            system.extend(p for p in message.parts if isinstance(p, TextPart) and p.text)
            continue
        assistant = message.role is Role.ASSISTANT
        parts = [
            (part, f"messages[{i}].parts[{j}]")
            for j, part in enumerate(message.parts)
            if not (isinstance(part, TextPart) and not part.text)
        ]
        if turns and turns[-1].assistant == assistant:
            turns[-1].parts.extend(parts)
        elif parts:
            turns.append(Turn(assistant, parts))
    return system, turns


def json_headers(bearer: str = "") -> dict[str, str]:
    """Headers of a JSON request, with `Authorization: Bearer` when a key is
    set: self-hosted servers often run without one."""
    headers = {"content-type": "application/json"}
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    return headers


def tool_call_arguments(part: ToolCallPart, field: str) -> JSON:
    """A tool call's arguments as an object, for providers that take one;
    `field` names the part in the INVALID_ARGUMENT if they are not."""
    field = f"{field}.tool_call.arguments"
    try:
        # Some providers stream a call without arguments as "".
        value = orjson.loads(part.arguments or "{}")
    except ValueError as exc:
        raise invalid_argument(field, f"tool call arguments are not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid_argument(field, "tool call arguments must be a JSON object")
    return value


def image_data_url(part: ImagePart, field: str) -> str:
    """An image as the URL that OpenAI-style APIs take: its own URL, or inline
    bytes as a data URL (which needs the media type)."""
    if not part.data:
        return part.url
    if not part.media_type:
        raise invalid_argument(field, "an inline image needs its media type")
    return f"data:{part.media_type};base64,{base64.b64encode(part.data).decode('ascii')}"


def quoted_body(body: bytes) -> str:
    """The start of an error body that is not the provider's JSON (a proxy's
    HTML page, plain text), for the error message."""
    return body.decode("utf-8", "replace").strip()[:MAX_ERROR_TEXT]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The upstream's Retry-After (seconds form) or retry-after-ms, if any."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    if (seconds := headers.get("retry-after")) is not None:
        try:
            return max(float(seconds), 0.0)
        except ValueError:
            return None  # HTTP-date form: too rare upstream to be worth parsing
    return None


def sampling_fields(params: GenerationParams, *, max_tokens: str) -> JSON:
    """The set sampling parameters under their common names (llama.cpp,
    Ollama's options, MLflow's params), the token cap under `max_tokens`;
    reasoning settings have no place among them."""
    fields: JSON = {
        max_tokens: params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "stop": list(params.stop) or None,
        "seed": params.seed,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    return {key: value for key, value in fields.items() if value is not None}
