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
from sluice.providers.sse import SSEDecoder, SSEError, SSEEvent


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    json: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"


class StreamDecoder(Protocol):
    """Bytes in, events out. `close` marks the end of the body: it returns
    the last events, or raises `GatewayError` if the stream was cut short.

    An upstream error is raised by `feed` or `close`; one found after other
    events of the same chunk waits in `failure` while `feed` returns those
    events, so they are delivered whatever the chunking. The caller raises
    `failure` as soon as it has passed them on."""

    failure: GatewayError | None

    def feed(self, data: bytes) -> list[Event]: ...

    def close(self) -> list[Event]: ...


class SSEStreamDecoder(abc.ABC):
    """A `StreamDecoder` over Server-Sent Events: subclasses turn one SSE
    event into domain events and say whether the body ended complete."""

    provider: ClassVar[str]

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self.failure: GatewayError | None = None

    def feed(self, data: bytes) -> list[Event]:
        self._raise_failure()
        return self._decode(self._sse.feed(data))

    def close(self) -> list[Event]:
        self._raise_failure()
        events = self._decode(self._sse.close())
        self._raise_failure()
        return events + self._end_of_body()

    @abc.abstractmethod
    def _handle(self, sse: SSEEvent, events: list[Event]) -> None:
        """Append the events of one SSE event; raise GatewayError on an
        upstream error, ValueError/LookupError/TypeError on bad data."""

    @abc.abstractmethod
    def _end_of_body(self) -> list[Event]:
        """The events owed at the end of the body, or raise if it was cut short."""

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _decode(self, sse_events: list[SSEEvent]) -> list[Event]:
        events: list[Event] = []
        for sse in sse_events:
            try:
                self._handle(sse, events)
            except GatewayError as exc:
                error = exc
            except (ValueError, LookupError, TypeError, AttributeError) as exc:
                error = upstream_protocol_error(
                    self.provider, f"unreadable {sse.event} event: {exc!r}"
                )
            else:
                continue
            if not events:
                raise error
            self.failure = error
            break
        return events


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
    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError: ...

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
                async for chunk in response.aiter_bytes():
                    for event in decoder.feed(chunk):
                        yield event
                    if decoder.failure is not None:
                        raise decoder.failure
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
