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
from sluice.providers.bounds import BodyBounds
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
        (bytes(12), 0, "aws: bad eventstream: the prelude's checksum does not match"),
        (prelude(0, 0) + bytes(4), 0, "aws: bad eventstream: a message of 0 bytes"),
        (framed(b"\x01x\x63", b""), 0, "aws: bad eventstream: KeyError(99)"),
    ],
    ids=["truncated-frame", "truncated-prelude", "crc", "short-length", "header"],
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
    assert "checksum does not match" in decoder.failure.message


def test_a_frame_over_max_event_bytes_is_refused_at_its_prelude() -> None:
    decoder = Payloads()
    decoder.bound(BodyBounds(event=1024))
    assert decoder.feed(body("one") + prelude(1025, 0)) == WHOLE[:1]
    assert decoder.failure is not None
    assert decoder.failure.reason == "UPSTREAM_EVENT_TOO_LARGE"
    # One byte less is a frame like any other, awaited whole.
    decoder = Payloads()
    decoder.bound(BodyBounds(event=1024))
    assert decoder.feed(prelude(1024, 0)) == []
    assert decoder.failure is None
