"""The AWS eventstream framer: any split of valid frames gives the same
frames; bad or cut-short framing is a protocol error, after the frames that
came whole."""

from __future__ import annotations

import pytest
from botocore.eventstream import EventStreamMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.domain import Event, TextDelta
from sluice.errors import Status
from sluice.providers.eventstream import EventStreamDecoder
from tests.decoding import chunked, decode
from tests.eventstream import frame, framed, prelude


class Payloads(EventStreamDecoder):
    """Each frame's payload as text, to see the framing alone."""

    provider = "aws"

    def _handle(self, frame: EventStreamMessage, events: list[Event]) -> None:
        events.append(TextDelta(frame.payload.decode()))

    def _end_of_body(self) -> list[Event]:
        return []


def body(*payloads: str) -> bytes:
    return b"".join(frame({":message-type": "event"}, text.encode()) for text in payloads)


BODY = body("one", "two", "", "three" * 100)
WHOLE = [TextDelta("one"), TextDelta("two"), TextDelta(""), TextDelta("three" * 100)]


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(0, len(BODY)), max_size=30))
def test_any_split_gives_the_same_frames(cuts: list[int]) -> None:
    assert decode(Payloads(), chunked(BODY, cuts)) == (WHOLE, None)


@pytest.mark.parametrize(
    ("data", "whole", "message"),
    [
        (BODY[:-1], 3, "aws: stream ended inside a frame (537 bytes left)"),
        (BODY[:5], 0, "aws: stream ended inside a frame (5 bytes left)"),
        (bytes(12), 0, "aws: bad eventstream: ChecksumMismatch("),
        (prelude(25 * 1024 * 1024 + 16, 0), 0, "aws: bad eventstream: InvalidPayloadLength("),
        (prelude(0, 0) + bytes(4), 0, "aws: bad eventstream: error("),
        (framed(b"\x01x\x63", b""), 0, "aws: bad eventstream: KeyError(99)"),
    ],
    ids=["truncated-frame", "truncated-prelude", "crc", "oversize", "short-length", "header"],
)
def test_bad_framing_is_a_protocol_error(data: bytes, whole: int, message: str) -> None:
    events, error = decode(Payloads(), [data])
    assert events == WHOLE[:whole]
    assert error is not None
    assert (error.status, error.reason) == (Status.UNAVAILABLE, "UPSTREAM_PROTOCOL_ERROR")
    assert error.message.startswith(message)


def test_frames_before_a_bad_one_of_the_same_chunk_still_count() -> None:
    decoder = Payloads()
    assert decoder.feed(body("one", "two") + bytes(16)) == WHOLE[:2]
    assert decoder.failure is not None
    assert "ChecksumMismatch" in decoder.failure.message
