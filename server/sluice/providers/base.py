"""The shape of a provider adapter.

`Adapter.stream` turns a domain request into a stream of domain events.
Every HTTP provider is an `HttpAdapter`, sans-I/O at its core: `build` turns
a domain request into an `UpstreamRequest`, `decoder` returns a fresh
`StreamDecoder` that turns the response body (any split of it) into domain
events, and `parse_error` turns an HTTP error response into a
`GatewayError`; `HttpAdapter.stream` runs them over the pooled HTTP client.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx

from sluice.domain import Event, Request
from sluice.errors import GatewayError, upstream_protocol_error, upstream_unreachable
from sluice.providers.sse import SSEError


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    json: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"


class StreamDecoder(Protocol):
    """Bytes in, events out. `close` marks the end of the body: it returns
    the last events, or raises `GatewayError` if the stream was cut short or
    carried an error."""

    def feed(self, data: bytes) -> list[Event]: ...

    def close(self) -> list[Event]: ...


class Adapter(abc.ABC):
    """One configured target of one provider family."""

    provider: ClassVar[str]

    @abc.abstractmethod
    def stream(self, request: Request) -> AsyncIterator[Event]:
        """Yield the events of the answer to `request` as they arrive."""


class HttpAdapter(Adapter):
    """A provider reached over HTTP through the shared client pool."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @abc.abstractmethod
    def build(self, request: Request) -> UpstreamRequest: ...

    @abc.abstractmethod
    def decoder(self, request: Request) -> StreamDecoder: ...

    @abc.abstractmethod
    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> GatewayError: ...

    async def stream(self, request: Request) -> AsyncIterator[Event]:
        """Call the upstream and yield its events as they arrive. Leaving the
        iteration early (cancellation, deadline) closes the HTTP response."""
        upstream = self.build(request)
        decoder = self.decoder(request)
        try:
            async with self._client.stream(
                upstream.method, upstream.url, json=upstream.json, headers=upstream.headers
            ) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    raise self.parse_error(response.status_code, response.headers, body)
                async for chunk in response.aiter_raw():
                    for event in decoder.feed(chunk):
                        yield event
            for event in decoder.close():
                yield event
        except httpx.TimeoutException as exc:
            raise upstream_unreachable(self.provider, f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise upstream_unreachable(self.provider, _describe(exc)) from None
        except SSEError as exc:
            raise upstream_protocol_error(self.provider, str(exc)) from None


def _describe(exc: httpx.TransportError) -> str:
    detail = str(exc) or type(exc).__name__
    return f"connection failed: {detail}"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The upstream's Retry-After (seconds form) or retry-after-ms, if any."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    if (seconds := headers.get("retry-after")) is not None:
        try:
            return max(float(seconds), 0.0)
        except ValueError:
            return None  # HTTP-date form: too rare upstream to be worth parsing
    return None
