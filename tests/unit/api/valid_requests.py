"""Valid requests of each RPC, for tests to change one field of."""

from __future__ import annotations

from typing import Any

from sluice_client.v1 import gateway_pb2 as pb


def text(value: str) -> pb.Part:
    return pb.Part(text=value)


def user(*parts: pb.Part) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, parts=parts or [text("hi")])


def chat(**fields: Any) -> pb.ChatRequest:
    """A valid chat request, with `fields` replacing its own."""
    return pb.ChatRequest(**{"route": "chat", "messages": [user()], **fields})


def complete(**fields: Any) -> pb.CompleteRequest:
    return pb.CompleteRequest(**{"route": "complete", "prompt": "Once", **fields})


def embed(**fields: Any) -> pb.EmbedRequest:
    return pb.EmbedRequest(**{"route": "embed", "inputs": ["a"], **fields})
