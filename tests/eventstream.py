"""Build AWS eventstream frames (prelude, headers, payload, CRC32s) for tests."""

from __future__ import annotations

import struct
import zlib


def prelude(total_length: int, headers_length: int) -> bytes:
    """A frame's first 12 bytes: lengths and their valid CRC."""
    lengths = struct.pack(">II", total_length, headers_length)
    return lengths + struct.pack(">I", zlib.crc32(lengths))


def framed(headers: bytes, payload: bytes) -> bytes:
    """An eventstream frame around raw header bytes, with valid CRCs."""
    message = prelude(16 + len(headers) + len(payload), len(headers)) + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def frame_ends(body: bytes) -> list[int]:
    """The offset after each frame of a valid body."""
    ends = [0]
    while ends[-1] < len(body):
        ends.append(ends[-1] + struct.unpack_from(">I", body, ends[-1])[0])
    return ends[1:]


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """A frame with string headers, as Bedrock sends them."""
    encoded = b"".join(
        struct.pack(">B", len(name)) + name + b"\x07" + struct.pack(">H", len(value)) + value
        for name, value in ((n.encode(), v.encode()) for n, v in headers.items())
    )
    return framed(encoded, payload)
