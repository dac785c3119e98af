"""AWS eventstream framing (Bedrock's ConverseStream), sans-I/O: binary
messages of prelude, headers, payload and CRC32s. Each message starts with a
prelude of its lengths and their CRC: Sluice checks it and splits the stream
on the total length, so a frame's size is known (and bounded) before its
bytes are held, then botocore parses each complete frame with both CRCs
checked. `EventStreamDecoder` is the framed-decoder
template over them."""

from __future__ import annotations

import struct
import zlib

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from sluice.errors import upstream_protocol_error
from sluice.providers.base import FramedStreamDecoder
from sluice.providers.framing import FramingError

# botocore's framing errors, and what a crafted frame with valid checksums can
# still raise from its header parser (short fields, unknown types, bad UTF-8).
_FRAMING_ERRORS = (ParserError, struct.error, ValueError, LookupError)
# A message's prelude: total length, headers length, the CRC32 of both.
_PRELUDE = struct.Struct(">III")
# The smallest message: prelude (12 bytes) and message CRC (4), no headers or payload.
_MIN_MESSAGE = 16


class EventStreamDecoder(FramedStreamDecoder[EventStreamMessage]):
    """Frames are eventstream messages."""

    def __init__(self) -> None:
        super().__init__()
        self._frames = EventStreamBuffer()
        self._unframed = bytearray()  # the bytes of the frame in progress
        self._next_length = 0  # its total length, once its prelude has come

    def _split(self, data: bytes) -> list[EventStreamMessage]:
        self._unframed += data
        error: FramingError | None = None
        try:
            self._take_complete_frames()
        except FramingError as exc:
            error = exc  # after the frames before it
        frames: list[EventStreamMessage] = []
        try:
            for frame in self._frames:
                frames.append(frame)
        except _FRAMING_ERRORS as exc:
            error = FramingError(f"bad eventstream: {exc!r}")
        if error is not None:
            if not frames:
                raise error
            # The frames before the bad one still count: their events go first.
            self.failure = upstream_protocol_error(self.provider, str(error))
        return frames

    def _take_complete_frames(self) -> None:
        """Pass the complete frames at the start of the unframed bytes to
        botocore, up to a bad prelude if there is one."""
        end = 0
        self._next_length = 0
        try:
            while len(self._unframed) - end >= _PRELUDE.size:
                length = self._total_length(end)
                if len(self._unframed) - end < length:
                    self._next_length = length
                    break
                end += length
        finally:
            self._frames.add_data(bytes(self._unframed[:end]))
            del self._unframed[:end]

    def _total_length(self, start: int) -> int:
        """The total length the prelude at `start` gives, once its CRC checks."""
        length, _headers, crc = _PRELUDE.unpack_from(self._unframed, start)
        if zlib.crc32(self._unframed[start : start + 8]) != crc:
            raise FramingError("bad eventstream: the prelude's checksum does not match")
        if length < _MIN_MESSAGE:
            raise FramingError(f"bad eventstream: a message of {length} bytes")
        return int(length)

    def _pending(self) -> int:
        return max(len(self._unframed), self._next_length)

    def _split_rest(self) -> list[EventStreamMessage]:
        if self._unframed:
            raise FramingError(f"stream ended inside a frame ({len(self._unframed)} bytes left)")
        return []

    def _describe(self, frame: EventStreamMessage) -> str:
        headers = frame.headers
        kind = headers.get(":event-type") or headers.get(":message-type") or "eventstream"
        return f"{kind} frame"
