"""Newline-delimited JSON framing (Ollama, TGI), sans-I/O: `LineDecoder`
splits bytes into lines, `NDJSONStreamDecoder` is the framed-decoder
template over it."""

from __future__ import annotations

from sluice.providers.base import FramedStreamDecoder
from sluice.providers.framing import MAX_LINE_BYTES, FramingError


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


class NDJSONStreamDecoder(FramedStreamDecoder[bytes]):
    """Frames are newline-delimited JSON lines (still raw bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self._lines = LineDecoder()

    def _split(self, data: bytes) -> list[bytes]:
        return self._lines.feed(data)

    def _split_rest(self) -> list[bytes]:
        return self._lines.close()

    def _describe(self, frame: bytes) -> str:
        return "line"
