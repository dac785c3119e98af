"""Drive a sans-I/O StreamDecoder the way HttpAdapter.stream does."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from sluice.domain import Event
from sluice.errors import GatewayError
from sluice.providers.base import StreamDecoder


def decode(
    decoder: StreamDecoder, chunks: Iterable[bytes]
) -> tuple[list[Event], GatewayError | None]:
    """The events of a body fed in `chunks`, and the error it ended with:
    what a caller would receive before the stream's status."""
    events: list[Event] = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
            if decoder.failure is not None:
                raise decoder.failure
            if decoder.done:
                break  # the terminal event: what follows is not read
        events += decoder.close()
    except GatewayError as exc:
        return events, exc
    return events, None


def network_chunks(body: bytes, size: int = 64 * 1024) -> list[bytes]:
    """`body` in reads of `size` bytes, as a socket delivers a large body."""
    return [body[i : i + size] for i in range(0, len(body), size)]


def chunked(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    """`body` cut at the given offsets (any order, duplicates allowed)."""
    points = sorted({0, len(body), *(min(max(c, 0), len(body)) for c in cuts)})
    return [body[a:b] for a, b in itertools.pairwise(points)]
