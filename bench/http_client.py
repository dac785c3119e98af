"""A minimal HTTP/1.1 client connection for the load generators: no HTTP
library, so that the client costs little next to the servers it measures.

One keep-alive connection, one request at a time; bodies with Content-Length
(nginx, the paced upstream) or chunked (uvicorn, in MLflow's streams). It
notes when each piece of the body arrived, so that the time of every SSE
event in it is known (TTFC, and the gaps between tokens).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

# An SSE event that carries a token: a non-empty `content` (the role chunk's is "").
_TOKEN_EVENT = re.compile(rb'"content":\s?"[^"]')


@dataclass
class Response:
    status: int
    body: bytes
    # (perf_counter, body bytes received by then), one for each read.
    arrivals: list[tuple[float, int]] = field(default_factory=list)

    def token_times(self) -> list[float]:
        """When each SSE event that carries a token had fully arrived."""
        times: list[float] = []
        read = 0
        for match in _TOKEN_EVENT.finditer(self.body):
            end = self.body.find(b"\n\n", match.end())
            end = len(self.body) if end < 0 else end + 2
            while read < len(self.arrivals) - 1 and self.arrivals[read][1] < end:
                read += 1
            times.append(self.arrivals[read][0])
        return times


class HttpConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._raw = bytearray()
        self._body = bytearray()
        self._arrivals: list[tuple[float, int]] = []
        self._body_start = -1
        self._length = -1  # Content-Length; -1 when chunked
        self._parsed = 0  # offset in _raw of the next chunk-size line
        self._status = 0
        self._waiter: asyncio.Future[Response] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("connection closed"))

    def request(self, raw: bytes) -> asyncio.Future[Response]:
        assert self._transport is not None
        self._raw.clear()
        self._body = bytearray()
        self._arrivals = []
        self._body_start = -1
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._raw += data
        if self._body_start < 0 and not self._head():
            return
        if self._length >= 0:
            received = len(self._raw) - self._body_start
            done = received >= self._length
        else:
            done = self._dechunk()
            received = len(self._body)
        self._arrivals.append((now, received))
        if done and self._waiter is not None and not self._waiter.done():
            body = self._body if self._length < 0 else self._raw[self._body_start :]
            self._waiter.set_result(Response(self._status, bytes(body), self._arrivals))

    def _head(self) -> bool:
        """Parse the status line and headers once they are all in."""
        end = self._raw.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._raw[:end]).decode("latin-1").split("\r\n")
        self._status = int(head[0].split(" ", 2)[1])
        self._length = -1
        chunked = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                self._length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
        self._body_start = self._parsed = end + 4
        if self._length < 0 and not chunked and self._waiter is not None:
            self._waiter.set_exception(ConnectionError("response without a length"))
            return False
        return True

    def _dechunk(self) -> bool:
        """Move every complete chunk to the body; True after the last one."""
        raw = self._raw
        while True:
            line_end = raw.find(b"\r\n", self._parsed)
            if line_end < 0:
                return False
            size = int(bytes(raw[self._parsed : line_end]).split(b";")[0], 16)
            data_end = line_end + 2 + size
            if len(raw) < data_end + 2:
                return False
            self._body += raw[line_end + 2 : data_end]
            self._parsed = data_end + 2
            if size == 0:
                return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass(frozen=True)
class Call:
    """One kind of POST, and what a good answer holds: HTTP 200,
    every one of `contains`, and (a stream) `tokens` content chunks."""

    path: str
    body: bytes
    contains: tuple[bytes, ...] = ()
    tokens: int = 0

    def check(self, response: Response) -> str:
        """What is wrong with `response`; "" when it is a good answer."""
        if response.status != 200:
            return f"HTTP {response.status}: {response.body[:200]!r}"
        missing = [part for part in self.contains if part not in response.body]
        if missing:
            return f"no {missing[0]!r} in {response.body[-200:]!r}"
        if self.tokens and len(got := response.token_times()) != self.tokens:
            return f"{len(got)} content chunks instead of {self.tokens}"
        return ""
