"""Sans-I/O framing shared by stream formats: the error every framer raises,
and the newline-delimited framer of NDJSON streams (Ollama, TGI)."""

from __future__ import annotations

MAX_LINE_BYTES = 4 * 1024 * 1024  # a line larger than this is an upstream fault


class FramingError(ValueError):
    """The bytes are not a valid stream of the expected format."""


class LineDecoder:
    """Bytes in, complete lines out (LF or CRLF endings); blank lines are
    skipped, as no NDJSON frame is blank."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buffer + chunk
        *lines, self._buffer = data.split(b"\n")
        if len(self._buffer) > MAX_LINE_BYTES:
            raise FramingError(f"line longer than {MAX_LINE_BYTES} bytes")
        return [line for raw in lines if (line := raw.rstrip(b"\r")).strip()]

    def close(self) -> list[bytes]:
        """End of body: a last line without its newline still counts."""
        rest, self._buffer = self._buffer.rstrip(b"\r"), b""
        return [rest] if rest.strip() else []
