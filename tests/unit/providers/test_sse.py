"""The Server-Sent Events framer: any split and any line ending give the
same events, as the WHATWG parsing rules say."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.providers.framing import FramingError
from sluice.providers.sse import SSEDecoder, SSEEvent
from tests.decoding import chunked

FAST = settings(max_examples=150, deadline=None)
CUTS = st.lists(st.integers(min_value=0, max_value=40_000), max_size=30)


def events_of(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"data: a\n\n"], [SSEEvent("message", "a")]),
        ([b"event: e\ndata: a\nid: 7\n\n"], [SSEEvent("e", "a", "7")]),
        ([b"data: a\ndata: b\n\n"], [SSEEvent("message", "a\nb")]),
        ([b"data:a\n\n"], [SSEEvent("message", "a")]),
        ([b": comment\ndata: a\n\n"], [SSEEvent("message", "a")]),
        ([b"event: only\n\ndata: a\n\n"], [SSEEvent("message", "a")]),
        ([b"\xef\xbb", b"\xbfdata: a\n\n"], [SSEEvent("message", "a")]),
        ([b"data: a\r", b"\n\r\n"], [SSEEvent("message", "a")]),
        ([b"data: a\r\rdata: b\r\r"], [SSEEvent("message", "a"), SSEEvent("message", "b")]),
        ([b"data: a"], [SSEEvent("message", "a")]),
        ([b"id: x\x00y\ndata: a\n\n"], [SSEEvent("message", "a")]),
    ],
    ids=[
        "data",
        "event-and-id",
        "multi-line",
        "no-space",
        "comment",
        "no-data",
        "split-bom",
        "split-crlf",
        "cr",
        "no-blank-line-at-end",
        "nul-in-id",
    ],
)
def test_events(chunks: list[bytes], expected: list[SSEEvent]) -> None:
    assert events_of(chunks) == expected


@FAST
@given(
    lines=st.lists(
        st.tuples(
            st.sampled_from(["data", "event", "id", ":", "retry"]),
            st.text(
                alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
                max_size=20,
            ),
        ),
        max_size=20,
    ),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=CUTS,
)
def test_sse_any_split_any_line_ending(
    lines: list[tuple[str, str]], newline: str, cuts: list[int]
) -> None:
    text = "".join(
        f"{field}: {value}{newline}" + (newline if i % 3 == 2 else "")
        for i, (field, value) in enumerate(lines)
    )
    body = text.encode()

    assert events_of(chunked(body, cuts)) == events_of([body])


def test_pending_counts_the_unfinished_line_and_the_events_data_lines() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: " + b"x" * 1000)
    assert decoder.pending == 1006
    decoder.feed(b"\ndata: yy\nda")  # an event of many data lines, no blank line yet
    assert decoder.pending == 1007 + 9 + 2
    assert decoder.feed(b"ta: z\n\n") == [SSEEvent("message", "x" * 1000 + "\nyy\nz")]
    assert decoder.pending == 0


def test_bad_utf8_is_a_framing_error() -> None:
    with pytest.raises(FramingError):
        SSEDecoder().feed(b"data: \xff\xfe\n\n")
