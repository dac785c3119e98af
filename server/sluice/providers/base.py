"""The shape of a provider adapter.

`Adapter.stream` turns a domain request into a stream of domain events.
Every HTTP provider is an `HttpAdapter`, sans-I/O at its core: `build` turns
a domain request into an `UpstreamRequest`, `decoder` returns a fresh
`StreamDecoder` that turns the response body (any split of it) into domain
events, and `error_fields` reads the provider's JSON error body;
`HttpAdapter.stream` runs them over the pooled HTTP client and reports each
HTTP exchange to an `ExchangeObserver`, if one is given.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import orjson

from sluice.coalesce import DELTAS, coalesce
from sluice.domain import Embeddings, Event, Finish, FinishReason, Request, Start, Usage
from sluice.errors import GatewayError, upstream_http_error, upstream_protocol_error
from sluice.providers.framing import FramingError
from sluice.providers.http import (
    TRANSPORT_ERRORS,
    UpstreamClient,
    UpstreamRequest,
    UpstreamResponse,
    transport_error,
)
from sluice.providers.wire import quoted_body, retry_after_seconds

Frame = TypeVar("Frame")

# The most of an error body read: enough for any provider's error JSON, and a
# proxy's 1 GiB error page costs no more.
MAX_ERROR_BODY = 64 * 1024


class HttpExchange(Protocol):
    """One HTTP request and its response, as an observer follows it."""

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers to send: `headers` with any the observer adds (trace context)."""
        ...

    def response(self, status_code: int) -> None:
        """The response's status line arrived."""
        ...

    def end(self, error: BaseException | None = None) -> None:
        """The exchange is over: the body was read whole, or `error` ended it."""
        ...


class ExchangeObserver(Protocol):
    """What an adapter reports of its HTTP requests (telemetry implements it)."""

    def http(self, method: str, url: str) -> HttpExchange: ...


@dataclass(frozen=True, slots=True)
class ErrorFields:
    """What a provider's error body says, as far as it could be read; the
    base fills in what is missing (see `HttpAdapter.parse_error`)."""

    message: str = ""
    type: str = ""
    request_id: str = ""
    # ErrorInfo metadata worth passing on.
    details: Mapping[str, str] = field(default_factory=dict)
    # Where the body knows better than the HTTP status line or headers.
    status: int | None = None
    retry_after: float | None = None


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


class FramedStreamDecoder(abc.ABC, Generic[Frame]):
    """A `StreamDecoder` over a framed format (SSE events, NDJSON lines,
    AWS eventstream messages): subclasses split bytes into frames, turn one
    frame into domain events, and say whether the body ended complete."""

    provider: str  # names the upstream in errors

    def __init__(self) -> None:
        self.failure: GatewayError | None = None

    def feed(self, data: bytes) -> list[Event]:
        self._raise_failure()
        return self._decode(self._framed(self._split, data))

    def close(self) -> list[Event]:
        self._raise_failure()
        events = self._decode(self._framed(self._split_rest))
        self._raise_failure()
        return events + self._end_of_body()

    def _framed(self, split: Callable[..., Sequence[Frame]], *data: bytes) -> Sequence[Frame]:
        try:
            return split(*data)
        except FramingError as exc:
            raise upstream_protocol_error(self.provider, str(exc)) from None

    @abc.abstractmethod
    def _split(self, data: bytes) -> Sequence[Frame]:
        """The frames completed by `data`; raise FramingError on bad framing."""

    @abc.abstractmethod
    def _split_rest(self) -> Sequence[Frame]:
        """The frames left at the end of the body."""

    @abc.abstractmethod
    def _handle(self, frame: Frame, events: list[Event]) -> None:
        """Append the events of one frame; raise GatewayError on an upstream
        error, ValueError/LookupError/TypeError on bad data."""

    @abc.abstractmethod
    def _end_of_body(self) -> list[Event]:
        """The events owed at the end of the body, or raise if it was cut short."""

    def _describe(self, frame: Frame) -> str:
        """How an unreadable frame is named in the error."""
        return "frame"

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _decode(self, frames: Sequence[Frame]) -> list[Event]:
        events: list[Event] = []
        for frame in frames:
            try:
                self._handle(frame, events)
            except GatewayError as exc:
                error = exc
            except (ValueError, LookupError, TypeError, AttributeError) as exc:
                error = upstream_protocol_error(
                    self.provider, f"unreadable {self._describe(frame)}: {exc!r}"
                )
            else:
                continue
            if not events:
                raise error
            self.failure = error
            break
        return events


class EmbeddingDecoder(abc.ABC):
    """An embeddings answer: one JSON body, buffered and read at close. A
    body that cannot be read is UPSTREAM_PROTOCOL_ERROR."""

    # What the body is, in the protocol error's message.
    answer = "embeddings response"

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._body = bytearray()
        self.failure: GatewayError | None = None  # errors are found at close

    def feed(self, data: bytes) -> list[Event]:
        self._body += data
        return []

    def close(self) -> list[Event]:
        try:
            start, embeddings, usage = self._read(orjson.loads(self._body))
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            raise upstream_protocol_error(
                self.provider, f"unreadable {self.answer}: {exc!r}"
            ) from None
        return [start, embeddings, usage, Finish(FinishReason.STOP)]

    @abc.abstractmethod
    def _read(self, payload: Any) -> tuple[Start, Embeddings, Usage]:
        """The answer in `payload`; raises the upstream's error if it is one."""


class Adapter(abc.ABC):
    """One configured target of one provider family."""

    provider: ClassVar[str]

    @abc.abstractmethod
    def stream(
        self,
        request: Request,
        *,
        observer: ExchangeObserver | None = None,
        coalesce_within: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Yield the events of the answer to `request` as they arrive; each
        HTTP exchange is reported to `observer`. With `coalesce_within` set,
        deltas that arrive together are yielded merged (coalesce.py), and a
        non-zero value waits that many seconds after each batch for more to
        join the next one; None yields every delta as the upstream sent it."""


class HttpAdapter(Adapter):
    """A provider reached over HTTP through the shared client pool.
    `connect_timeout` bounds opening a connection (None: the pool's)."""

    def __init__(self, client: UpstreamClient, *, connect_timeout: float | None = None) -> None:
        self._client = client
        self._connect_timeout = connect_timeout

    @abc.abstractmethod
    def build(self, request: Request) -> UpstreamRequest: ...

    @abc.abstractmethod
    def decoder(self, request: Request) -> StreamDecoder: ...

    @abc.abstractmethod
    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        """What the provider's error says: `payload` is the body's JSON (None
        when the body is not JSON), of any shape."""

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GatewayError:
        """An HTTP error answer as a `GatewayError`: the fields the provider's
        JSON gives, else the start of the body quoted; Retry-After from the
        headers before the body's own."""
        try:
            payload = orjson.loads(body)
        except ValueError:
            payload = None
        try:
            fields = self.error_fields(status, headers, payload)
        except (ValueError, LookupError, TypeError, AttributeError):
            fields = ErrorFields()  # a body of a shape the provider never documented
        retry_after = retry_after_seconds(headers)
        return upstream_http_error(
            self.provider,
            fields.status or status,
            fields.message or quoted_body(body) or f"HTTP {status} with an empty body",
            error_type=fields.type,
            request_id=fields.request_id,
            retry_after=fields.retry_after if retry_after is None else retry_after,
            details=dict(fields.details),
        )

    async def stream(
        self,
        request: Request,
        *,
        observer: ExchangeObserver | None = None,
        coalesce_within: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Call the upstream and yield its events as they arrive: the events
        of one read of the body together (what has arrived since the last
        read is what is waiting). Leaving the iteration early (cancellation,
        deadline) closes the HTTP response."""
        upstream = self.build(request)
        decoder = self.decoder(request)
        exchange = observer.http(upstream.method, upstream.url) if observer is not None else None
        headers = upstream.headers if exchange is None else exchange.headers(upstream.headers)
        failure: BaseException | None = None
        try:
            async with self._client.send(
                upstream, headers, connect_timeout=self._connect_timeout
            ) as response:
                await self._check_status(response, exchange)
                async for chunk in response.chunks():
                    batch = _batch(decoder, chunk, coalesce_within)
                    for event in batch:
                        yield event
                    if decoder.failure is not None:
                        raise decoder.failure
                    if coalesce_within and any(isinstance(e, DELTAS) for e in batch):
                        # A delta just left: let what arrives meanwhile join the next.
                        await asyncio.sleep(coalesce_within)
            for event in decoder.close():
                yield event
        except TRANSPORT_ERRORS as exc:
            failure = transport_error(self.provider, exc)
            raise failure from None
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if exchange is not None:
                exchange.end(failure)

    async def _check_status(
        self, response: UpstreamResponse, exchange: HttpExchange | None
    ) -> None:
        """Report the response's status; raise the upstream's error if it is one."""
        if exchange is not None:
            exchange.response(response.status)
        if response.status >= 400:
            body = await response.read(MAX_ERROR_BODY)
            raise self.parse_error(response.status, response.headers, body)


def _batch(decoder: StreamDecoder, chunk: bytes, coalesce_within: float | None) -> list[Event]:
    """The events of one read of the body, coalesced unless `coalesce_within`
    is None."""
    events = decoder.feed(chunk)
    return events if coalesce_within is None or len(events) < 2 else coalesce(events)
