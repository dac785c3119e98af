"""Protobuf wire bytes built by hand: requests no client library would send."""

from __future__ import annotations

from sluice_client.v1 import gateway_pb2 as pb


def length_delimited(tag: int, payload: bytes) -> bytes:
    """Field `tag` (its key byte) holding `payload`, length-prefixed."""
    length, size = bytearray(), len(payload)
    while True:
        length.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            break
    return bytes([tag]) + bytes(length) + payload


def deep_tool_schema(depth: int) -> bytes:
    """A valid ChatRequest, plus a tool whose schema nests `depth` Structs:
    past protobuf's recursion limit for a depth over about 33."""
    struct = b""
    for _ in range(depth):
        value = length_delimited(0x2A, struct)  # Value.struct_value
        entry = length_delimited(0x0A, b"a") + length_delimited(0x12, value)
        struct = length_delimited(0x0A, entry)  # Struct.fields
    tool = length_delimited(0x0A, b"f") + length_delimited(0x1A, struct)
    hello = pb.ChatRequest(
        route="mock-chat", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])]
    )
    return hello.SerializeToString() + length_delimited(0x22, tool)
