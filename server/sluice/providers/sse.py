"""Server-Sent Events framing (WHATWG HTML "event stream" parsing), sans-I/O.

`SSEDecoder`: bytes in, `SSEEvent`s out. `feed` takes any split of the body,
so a decoder built on it gives the same events however the network cuts the
stream. Lines end in CRLF, LF or CR (Gemini uses CRLF); a BOM at the start is
dropped; comment lines (":") are ignored; multi-line data joins with "\n".
`pending` counts what the event in progress holds (its data lines and the
unfinished line), so that an event of endless `data:` lines is bounded too.
`SSEStreamDecoder` is the framed-decoder template over it, for providers
that stream SSE.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.providers.base import FramedStreamDecoder
from sluice.providers.framing import FramingError

BOM = b"\xef\xbb\xbf"


class SSEError(FramingError):
    """The byte stream is not a valid event stream."""


# Not frozen: one is built per event of every stream, and a frozen
# dataclass's __init__ costs three times a plain one's. Nothing changes one.
@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str
    id: str = ""


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._started = False
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self._data_bytes = 0  # the size of the data lines in `_data`
        self._id = ""

    @property
    def pending(self) -> int:
        """Bytes held for the event in progress."""
        return len(self._buffer) + self._data_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not self._started:
            after_bom = self._without_bom(chunk)
            if after_bom is None:
                return []
            chunk = after_bom
        if not chunk:
            return []
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # second half of a CRLF split across chunks
        self._pending_cr = False
        self._buffer += chunk
        if b"\n" not in chunk and b"\r" not in chunk:
            return []  # a long line goes on: no need to scan it again
        return self._lines(self._buffer)

    def close(self) -> list[SSEEvent]:
        """End of body: a final event without its blank line still counts."""
        events = self.feed(b"\n") if self._buffer else []
        event = self._line(b"")
        return events if event is None else [*events, event]

    def _without_bom(self, chunk: bytes) -> bytes | None:
        """The body's first bytes with a BOM dropped, or None while the
        bytes so far could still be the start of one."""
        self._buffer += chunk
        if len(self._buffer) < len(BOM) and BOM.startswith(self._buffer):
            return None
        self._started = True
        chunk = bytes(self._buffer.removeprefix(BOM))
        self._buffer = bytearray()
        return chunk

    def _lines(self, data: bytearray) -> list[SSEEvent]:
        """The events completed by the lines of `data`; an unfinished last
        line waits in the buffer."""
        if b"\r" not in data:
            return self._lf_lines(data)
        events: list[SSEEvent] = []
        start = 0
        while True:
            cr = data.find(b"\r", start)
            lf = data.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, next_start = lf, lf + 1
            elif cr + 1 < len(data):
                end, next_start = cr, cr + 2 if data[cr + 1] == 0x0A else cr + 1
            else:
                end, next_start = cr, cr + 1
                self._pending_cr = True
            event = self._line(data[start:end])
            if event is not None:
                events.append(event)
            start = next_start
        self._buffer = data[start:]
        return events

    def _lf_lines(self, data: bytearray) -> list[SSEEvent]:
        """`_lines` where every line ends in LF (most providers): one split
        in C instead of a search per line end, and the lines most streams
        are made of (`data: ...`, blank) read without the general parse."""
        *lines, self._buffer = data.split(b"\n")
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if (event := self._dispatch()) is not None:
                    events.append(event)
            elif line.startswith(b"data: "):
                self._add_data(_utf8(line[6:]), len(line))
            else:
                self._line(line)
        return events

    def _line(self, raw: bytes | bytearray) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        line = _utf8(raw)
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._add_data(value, len(raw))
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _add_data(self, value: str, size: int) -> None:
        """A data line of `size` bytes."""
        self._data.append(value)
        self._data_bytes += size + 1  # with its line end

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
        self._event = ""
        self._data = []
        self._data_bytes = 0
        return event


def _utf8(raw: bytes | bytearray) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SSEError(f"event stream is not UTF-8: {exc}") from None


class SSEStreamDecoder(FramedStreamDecoder[SSEEvent]):
    """Frames are Server-Sent Events."""

    def __init__(self) -> None:
        super().__init__()
        self._sse = SSEDecoder()

    def _split(self, data: bytes) -> list[SSEEvent]:
        return self._sse.feed(data)

    def _split_rest(self) -> list[SSEEvent]:
        return self._sse.close()

    def _pending(self) -> int:
        return self._sse.pending

    def _describe(self, frame: SSEEvent) -> str:
        return f"{frame.event} event"
