"""What every framer (SSE, NDJSON, AWS eventstream) shares: the error it
raises on bytes that are not its format. A framer bounds nothing itself: it
reports the bytes it holds for the frame in progress (`pending`), and the
framed decoder refuses a frame over the target's `max_event_bytes`."""

from __future__ import annotations


class FramingError(ValueError):
    """The bytes are not a valid stream of the expected format."""
