"""Builders of conversation messages, and the dict shorthand for them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sluice_client._results import ToolCall
from sluice_client.v1 import gateway_pb2 as pb

ContentLike = str | pb.Part | pb.Image
"""Content of a user message: text, an image, or any `Part`."""
ToolCallLike = ToolCall | pb.ToolCall | Mapping[str, str]
"""A tool call: a `Reply`'s, a proto, or a dict {"id", "name", "arguments"}."""
MessageLike = pb.Message | Mapping[str, Any]
"""A message, or a dict such as {"role": "user", "content": "Hi"}."""


def system(text: str, *, name: str = "") -> pb.Message:
    """A system message: instructions for the model."""
    return pb.Message(role=pb.ROLE_SYSTEM, parts=[pb.Part(text=text)], name=name)


def user(*content: ContentLike, name: str = "") -> pb.Message:
    """A user message of text and images, in order: `user("What is this?", image(png))`."""
    return pb.Message(role=pb.ROLE_USER, parts=[_part(item) for item in content], name=name)


def assistant(
    text: str = "", *, tool_calls: Iterable[ToolCallLike] = (), name: str = ""
) -> pb.Message:
    """An assistant message: what the model said and the tools it called.

    To continue a conversation: `assistant(reply.text, tool_calls=reply.tool_calls)`.
    """
    parts = [pb.Part(text=text)] if text else []
    parts += [pb.Part(tool_call=_tool_call(call)) for call in tool_calls]
    return pb.Message(role=pb.ROLE_ASSISTANT, parts=parts, name=name)


def tool_result(tool_call_id: str, content: str, *, is_error: bool = False) -> pb.Message:
    """A tool message: the result of the tool call `tool_call_id`."""
    result = pb.ToolResult(tool_call_id=tool_call_id, content=content, is_error=is_error)
    return pb.Message(role=pb.ROLE_TOOL, parts=[pb.Part(tool_result=result)])


def image(source: bytes | str, media_type: str = "") -> pb.Part:
    """An image part: inline bytes (give their `media_type`, e.g. "image/png")
    or a URL."""
    if isinstance(source, bytes):
        return pb.Part(image=pb.Image(data=source, media_type=media_type))
    return pb.Part(image=pb.Image(url=source, media_type=media_type))


def to_message(message: MessageLike) -> pb.Message:
    """A `Message` from a proto or a dict.

    A dict has a "role" ("system", "user", "assistant" or "tool") and
    "content", plus the keyword arguments of that role's builder:
    {"role": "tool", "tool_call_id": "call_1", "content": "18°C"}.
    """
    if isinstance(message, pb.Message):
        return message
    if not isinstance(message, Mapping):
        raise TypeError(f"a message is a Message or a dict, not {type(message).__name__}")
    fields = dict(message)
    role = fields.pop("role", None)
    content = fields.pop("content", "")
    # Unknown keys fail as unexpected keyword arguments of the builder.
    match role:
        case "system":
            return system(content, **fields)
        case "user":
            return user(*([content] if isinstance(content, ContentLike) else content), **fields)
        case "assistant":
            return assistant(content, **fields)
        case "tool":
            return tool_result(content=content, **fields)
    raise ValueError(f"unknown message role {role!r}: use system, user, assistant or tool")


def _part(content: ContentLike) -> pb.Part:
    if isinstance(content, str):
        return pb.Part(text=content)
    if isinstance(content, pb.Image):
        return pb.Part(image=content)
    if isinstance(content, pb.Part):
        return content
    raise TypeError(f"message content is text, an Image or a Part, not {type(content).__name__}")


def _tool_call(call: ToolCallLike) -> pb.ToolCall:
    if isinstance(call, pb.ToolCall):
        return call
    if isinstance(call, ToolCall):
        return pb.ToolCall(id=call.id, name=call.name, arguments=call.arguments)
    return pb.ToolCall(**call)
