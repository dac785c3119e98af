"""The one seam between provider adapters and the network: pooled HTTP
connections per upstream origin, shared by every route.

aiohttp does the I/O (its C parser makes a streamed request cost about a
tenth of httpx's, and a read returns every byte that has arrived, which is
what lets deltas waiting together leave together; docs/DESIGN.md has the
figures). Nothing else in Sluice imports it: adapters see `UpstreamClient`,
`UpstreamResponse` and, for failures, `TRANSPORT_ERRORS` mapped by
`transport_error`.

Errors below HTTP, as callers see them:

    connect timeout (the target's `timeouts.connect`)  UNAVAILABLE  UPSTREAM_TIMEOUT
    refused, reset, DNS, read silence (300 s), cut     UNAVAILABLE  UPSTREAM_UNAVAILABLE
    undecodable compression, malformed HTTP head       UNAVAILABLE  UPSTREAM_PROTOCOL_ERROR
    every connection to the origin busy for 10 s       RESOURCE_EXHAUSTED
                                                        UPSTREAM_CONNECTIONS_EXHAUSTED (+ RetryInfo)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.http_exceptions import ContentEncodingError
from yarl import URL

from sluice.errors import (
    GatewayError,
    Reason,
    upstream_protocol_error,
    upstream_timeout,
    upstream_unreachable,
)

DEFAULT_MAX_CONNECTIONS = 1000
# Long streams are normal for LLMs: the read timeout bounds the silence
# between chunks, not the whole call.
READ_TIMEOUT = 300.0
CONNECT_TIMEOUT = 10.0
# How long a request may wait for one of the origin's connections.
POOL_WAIT = 10.0
KEEPALIVE = 60.0
# After a stream's terminal event, how long and how much of what follows is
# read, waiting for the body's end so the connection can be reused; an
# upstream that keeps its body open longer loses its connection instead.
END_OF_BODY_GRACE = 0.05
END_OF_BODY_TAIL = 64 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    json: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"
    # `json` serialized, when a signature covers the exact bytes (SigV4).
    content: bytes | None = None


class PoolExhaustedError(Exception):
    """Every connection to the origin stayed busy for `POOL_WAIT` seconds."""


# What a request may raise below HTTP; `transport_error` maps each.
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, PoolExhaustedError)


class UpstreamResponse:
    """The head of an upstream's answer, and its body as it arrives."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""
        return self._response.headers

    async def read(self, limit: int) -> bytes:
        """The body, at most its first `limit` bytes (the rest is never read)."""
        body = bytearray()
        while len(body) < limit and (data := await self._response.content.read(limit - len(body))):
            body += data
        return bytes(body)

    def chunks(self) -> AsyncIterator[bytes]:
        """The body: at each step, every byte that has arrived since the last."""
        return self._response.content.iter_any()

    async def finish(self) -> None:
        """The reader has the whole answer: the connection goes back to the
        pool if the body ends with it (its last bytes, such as a chunked
        body's terminator, may trail by a moment), else it is closed."""
        content = self._response.content
        if content.at_eof():
            return  # the body ended with the answer (most upstreams): no wait to bound
        left = END_OF_BODY_TAIL
        with contextlib.suppress(*TRANSPORT_ERRORS):
            async with asyncio.timeout(END_OF_BODY_GRACE):
                while left > 0 and (data := await content.read(left)):
                    left -= len(data)
        if not content.at_eof():
            self._response.close()


class UpstreamClient:
    """Pooled keep-alive connections to one origin, at most `max_connections`
    in use at once; a request finding them all busy waits up to `POOL_WAIT`
    seconds, then is refused (it never spins)."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def send(
        self,
        request: UpstreamRequest,
        headers: Mapping[str, str],
        *,
        connect_timeout: float | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send `request`; its response is read inside the `async with`, and
        leaving it early closes the connection instead of reusing it."""
        await self._take_slot()
        try:
            async with self._open_session().request(
                request.method,
                # As built, byte for byte: a signature (SigV4) covers the path.
                URL(request.url, encoded=True),
                data=request.content if request.content is not None else _json(request.json),
                headers=headers,
                timeout=self._timeout(connect_timeout),
                allow_redirects=False,
            ) as response:
                yield UpstreamResponse(response)
        finally:
            self._slots.release()

    async def _take_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: at once, no timer needed
            return
        try:
            async with asyncio.timeout(POOL_WAIT):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolExhaustedError from None

    def _timeout(self, connect_timeout: float | None) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(connect_timeout)
        if timeout is None:
            timeout = self._timeouts[connect_timeout] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout or CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
            )
        return timeout

    def _open_session(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections, keepalive_timeout=KEEPALIVE
                ),
                auto_decompress=True,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpClientPool:
    """One `UpstreamClient` per origin (and connection limit)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, int], UpstreamClient] = {}

    def client_for(
        self, base_url: str, max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> UpstreamClient:
        parts = urlsplit(base_url)
        key = (f"{parts.scheme}://{parts.netloc}".lower(), max_connections)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = UpstreamClient(max_connections)
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def transport_error(provider: str, error: BaseException) -> GatewayError:
    """The gateway's error for a request to `provider` that failed below
    HTTP (one of `TRANSPORT_ERRORS`)."""
    if isinstance(error, PoolExhaustedError):
        return GatewayError(
            Reason.UPSTREAM_CONNECTIONS_EXHAUSTED,
            f"{provider}: every connection to the upstream is busy",
            metadata={"provider": provider},
            retry_after=1.0,
        )
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return upstream_timeout(provider, "connect", "could not connect in time")
    if isinstance(error, aiohttp.ClientResponseError) or isinstance(
        error.__cause__, ContentEncodingError
    ):
        # A malformed head, or a body its compression cannot undo.
        return upstream_protocol_error(provider, f"unreadable response: {_describe(error)}")
    if isinstance(error, TimeoutError):
        return upstream_unreachable(provider, f"timed out ({type(error).__name__})")
    return upstream_unreachable(provider, f"connection failed: {_describe(error)}")


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _json(body: Mapping[str, object]) -> bytes:
    return orjson.dumps(body, default=_plain)


def _plain(value: object) -> object:
    """What orjson cannot write itself: read-only mappings (tool schemas)."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
