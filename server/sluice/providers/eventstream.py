"""AWS eventstream framing (Bedrock's ConverseStream), sans-I/O: binary
messages of prelude, headers, payload and CRC32s, parsed by botocore with
both CRCs checked. `EventStreamDecoder` is the framed-decoder template over
them."""

from __future__ import annotations

import struct

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from sluice.errors import upstream_protocol_error
from sluice.providers.base import FramedStreamDecoder
from sluice.providers.framing import FramingError

# botocore's framing errors, and what a crafted frame with valid checksums can
# still raise from its header parser (short fields, unknown types, bad UTF-8).
_FRAMING_ERRORS = (ParserError, struct.error, ValueError, LookupError)


class EventStreamDecoder(FramedStreamDecoder[EventStreamMessage]):
    """Frames are eventstream messages."""

    def __init__(self) -> None:
        super().__init__()
        self._frames = EventStreamBuffer()
        self._unframed = 0  # bytes fed that no complete frame has consumed yet

    def _split(self, data: bytes) -> list[EventStreamMessage]:
        self._frames.add_data(data)
        self._unframed += len(data)
        frames: list[EventStreamMessage] = []
        try:
            for frame in self._frames:
                self._unframed -= frame.prelude.total_length
                frames.append(frame)
        except _FRAMING_ERRORS as exc:
            error = FramingError(f"bad eventstream: {exc!r}")
            if not frames:
                raise error from None
            # The frames before the bad one still count: their events go first.
            self.failure = upstream_protocol_error(self.provider, str(error))
        return frames

    def _split_rest(self) -> list[EventStreamMessage]:
        if self._unframed:
            raise FramingError(f"stream ended inside a frame ({self._unframed} bytes left)")
        return []

    def _describe(self, frame: EventStreamMessage) -> str:
        headers = frame.headers
        kind = headers.get(":event-type") or headers.get(":message-type") or "eventstream"
        return f"{kind} frame"
