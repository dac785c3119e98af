"""Request building, shared by `Client` and `AsyncClient`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sluice_client._messages import MessageLike, to_message, user
from sluice_client.v1 import gateway_pb2 as pb

GenerationLike = pb.GenerationConfig | Mapping[str, Any]
"""Sampling parameters, or a dict of `GenerationConfig` fields: {"max_tokens": 256}."""
ToolLike = pb.Tool | Mapping[str, Any]
"""A tool, or a dict {"name", "description", "parameters": <JSON Schema dict>}."""
ToolChoiceLike = pb.ToolChoice | str
"""A `ToolChoice`, "auto", "none", "required", or the name of the one tool to call."""

_TOOL_CHOICE_MODES = {
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
}


def chat_request(
    route: str,
    messages: str | Iterable[MessageLike],
    *,
    generation: GenerationLike | None,
    tools: Iterable[ToolLike] | None,
    tool_choice: ToolChoiceLike | None,
    labels: Mapping[str, str] | None,
) -> pb.ChatRequest:
    return pb.ChatRequest(
        route=route,
        # A bare string is the common one-question case, not a list of characters.
        messages=[user(messages)] if isinstance(messages, str) else map(to_message, messages),
        generation=_generation(generation),
        tools=[_tool(tool) for tool in tools or ()],
        tool_choice=_tool_choice(tool_choice),
        labels=labels,
    )


def complete_request(
    route: str,
    prompt: str,
    *,
    suffix: str = "",
    generation: GenerationLike | None,
    labels: Mapping[str, str] | None,
) -> pb.CompleteRequest:
    return pb.CompleteRequest(
        route=route,
        prompt=prompt,
        suffix=suffix,
        generation=_generation(generation),
        labels=labels,
    )


def embed_request(
    route: str,
    inputs: Sequence[str],
    *,
    dimensions: int | None,
    labels: Mapping[str, str] | None,
) -> pb.EmbedRequest:
    if isinstance(inputs, str):
        raise TypeError("inputs is a list of strings; embed one text as [text]")
    return pb.EmbedRequest(route=route, inputs=inputs, dimensions=dimensions, labels=labels)


def _generation(generation: GenerationLike | None) -> pb.GenerationConfig | None:
    if generation is None or isinstance(generation, pb.GenerationConfig):
        return generation
    return pb.GenerationConfig(**generation)


def _tool(tool: ToolLike) -> pb.Tool:
    if isinstance(tool, pb.Tool):
        return tool
    fields = dict(tool)
    parameters = fields.pop("parameters", None)
    message = pb.Tool(**fields)
    if parameters is not None:
        message.parameters.update(parameters)
    return message


def _tool_choice(choice: ToolChoiceLike | None) -> pb.ToolChoice | None:
    if choice is None or isinstance(choice, pb.ToolChoice):
        return choice
    if choice in _TOOL_CHOICE_MODES:
        return pb.ToolChoice(mode=_TOOL_CHOICE_MODES[choice])
    return pb.ToolChoice(tool_name=choice)
