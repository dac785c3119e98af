"""What every framer (SSE, NDJSON, AWS eventstream) shares: the error it
raises on bytes that are not its format, and its bound on a frame's size."""

from __future__ import annotations

MAX_LINE_BYTES = 4 * 1024 * 1024  # a line larger than this is an upstream fault


class FramingError(ValueError):
    """The bytes are not a valid stream of the expected format."""
