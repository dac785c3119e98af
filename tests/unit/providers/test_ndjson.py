"""The newline-delimited framer: any split gives the same lines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.providers.ndjson import LineDecoder
from tests.decoding import chunked

FAST = settings(max_examples=150, deadline=None)
CUTS = st.lists(st.integers(min_value=0, max_value=40_000), max_size=30)


@FAST
@given(
    lines=st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=20), cuts=CUTS
)
def test_lines_any_split(lines: list[bytes], cuts: list[int]) -> None:
    body = b"\n".join(lines)

    def run(chunks: list[bytes]) -> list[bytes]:
        decoder = LineDecoder()
        return [line for chunk in chunks for line in decoder.feed(chunk)] + decoder.close()

    expected = [line.rstrip(b"\r") for line in lines if line.strip()]
    assert run(chunked(body, cuts)) == run([body])
    assert run([body]) == expected


def test_pending_counts_the_unfinished_line() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b'{"a": 1}\n{"b"') == [b'{"a": 1}']
    assert decoder.pending == 4
    decoder.feed(b"x" * 1000)
    assert decoder.pending == 1004
