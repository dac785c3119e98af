"""Newline-delimited JSON framing (Ollama, TGI), sans-I/O: `LineDecoder`
splits bytes into lines, `NDJSONStreamDecoder` is the framed-decoder
template over it."""

from __future__ import annotations

from sluice.providers.base import FramedStreamDecoder


class LineDecoder:
    """Bytes in, complete lines out (LF or CRLF endings); blank lines are
    skipped, as no NDJSON frame is blank."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held for the line in progress."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        if b"\n" not in chunk:
            return []  # a long line goes on: no need to split it again
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = rest
        return [bytes(line) for raw in lines if (line := raw.rstrip(b"\r")).strip()]

    def close(self) -> list[bytes]:
        """End of body: a last line without its newline still counts."""
        rest, self._buffer = bytes(self._buffer.rstrip(b"\r")), bytearray()
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

    def _pending(self) -> int:
        return self._lines.pending

    def _describe(self, frame: bytes) -> str:
        return "line"
