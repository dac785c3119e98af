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
from sluice.errors import (
    GatewayError,
    upstream_http_error,
    upstream_protocol_error,
    upstream_too_large,
)
from sluice.providers.bounds import DEFAULT_BOUNDS, MAX_ERROR_BODY, BodyBounds
from sluice.providers.framing import FramingError
from sluice.providers.http import (
    TRANSPORT_ERRORS,
    UpstreamClient,
    UpstreamRequest,
    UpstreamResponse,
    transport_error,
)
from sluice.providers.options import deep_merge, merged_options
from sluice.providers.shapes import misshapen
from sluice.providers.wire import JSON, quoted_body, retry_after_seconds

Frame = TypeVar("Frame")

# What reading an upstream's JSON of a shape it never documented raises (a
# missing key, a list for an object, a number for a string): the upstream's
# fault, UPSTREAM_PROTOCOL_ERROR, never a gateway bug.
UNREADABLE = (ValueError, LookupError, TypeError, AttributeError)


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
    `failure` as soon as it has passed them on.

    `done` turns true at the provider's terminal event: the answer is whole,
    and nothing after it is read. `bound` sets what the decoder may hold:
    more raises UPSTREAM_EVENT_TOO_LARGE (one stream event) or
    UPSTREAM_RESPONSE_TOO_LARGE (a unary body)."""

    failure: GatewayError | None
    done: bool

    def bound(self, bounds: BodyBounds) -> None: ...

    def feed(self, data: bytes) -> list[Event]: ...

    def close(self) -> list[Event]: ...


class FramedStreamDecoder(abc.ABC, Generic[Frame]):
    """A `StreamDecoder` over a framed format (SSE events, NDJSON lines,
    AWS eventstream messages): subclasses split bytes into frames, turn one
    frame into domain events, and say whether the body ended complete."""

    provider: str  # names the upstream in errors

    def __init__(self) -> None:
        self.failure: GatewayError | None = None
        self.done = False  # subclasses set it at the provider's terminal event
        self._max_event_bytes = DEFAULT_BOUNDS.event

    def bound(self, bounds: BodyBounds) -> None:
        self._max_event_bytes = bounds.event

    def feed(self, data: bytes) -> list[Event]:
        self._raise_failure()
        events = self._decode(self._framed(self._split, data))
        if self._pending() > self._max_event_bytes:
            error = upstream_too_large(self.provider, "event", self._max_event_bytes)
            if not events:
                raise error
            self.failure = self.failure or error
        return events

    def close(self) -> list[Event]:
        self._raise_failure()
        if self.done:
            return []
        events = self._decode(self._framed(self._split_rest))
        self._raise_failure()
        if self.done:
            return events  # the terminal event came last, without its delimiter
        try:
            return events + self._end_of_body()
        except UNREADABLE as exc:
            raise upstream_protocol_error(self.provider, f"unreadable stream: {exc!r}") from None

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
    def _pending(self) -> int:
        """The bytes held for the frame in progress (as many as it says it
        has, where a frame starts with its length)."""

    @abc.abstractmethod
    def _end_of_body(self) -> list[Event]:
        """The events owed at the end of a body that ended before its
        terminal event, or raise: it was cut short."""

    def _describe(self, frame: Frame) -> str:
        """How an unreadable frame is named in the error."""
        return "frame"

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _decode(self, frames: Sequence[Frame]) -> list[Event]:
        events: list[Event] = []
        for frame in frames:
            if self.done:
                break  # what follows the terminal event is not the answer's
            try:
                self._handle(frame, events)
            except GatewayError as exc:
                error = exc
            except UNREADABLE as exc:
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


class JSONBodyDecoder(abc.ABC):
    """An answer that is one JSON body, buffered and read at close. A body
    that cannot be read is UPSTREAM_PROTOCOL_ERROR."""

    # What the body is, in the protocol error's message.
    answer = "response"

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._body = bytearray()
        self.failure: GatewayError | None = None  # errors are found at close
        self.done = False  # the body's end is the answer's
        self._max_bytes = DEFAULT_BOUNDS.response

    def bound(self, bounds: BodyBounds) -> None:
        self._max_bytes = bounds.response

    def feed(self, data: bytes) -> list[Event]:
        if len(self._body) + len(data) > self._max_bytes:
            raise upstream_too_large(self.provider, "response", self._max_bytes)
        self._body += data
        return []

    def close(self) -> list[Event]:
        try:
            return self._events(orjson.loads(self._body))
        except UNREADABLE as exc:
            raise upstream_protocol_error(
                self.provider, f"unreadable {self.answer}: {exc!r}"
            ) from None

    @abc.abstractmethod
    def _events(self, payload: Any) -> list[Event]:
        """The answer's events; raises the upstream's error if it is one."""


class EmbeddingDecoder(JSONBodyDecoder):
    """An embeddings answer in one JSON body."""

    answer = "embeddings response"

    def _events(self, payload: Any) -> list[Event]:
        start, embeddings, usage = self._read(payload)
        return [start, embeddings, usage, Finish(FinishReason.STOP)]

    @abc.abstractmethod
    def _read(self, payload: Any) -> tuple[Start, Embeddings, Usage]:
        """The answer in `payload`; raises the upstream's error if it is one."""


class Adapter(abc.ABC):
    """One configured target of one provider family."""

    provider: ClassVar[str]

    @property
    def option_names(self) -> tuple[str, ...]:
        """The `provider_options` entries this adapter applies, later ones
        over earlier ones."""
        return (self.provider,)

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
    `connect_timeout` bounds opening a connection (None: the pool's),
    `bounds` what is held of an answer."""

    def __init__(
        self,
        client: UpstreamClient,
        *,
        connect_timeout: float | None = None,
        bounds: BodyBounds = DEFAULT_BOUNDS,
    ) -> None:
        self._client = client
        self._connect_timeout = connect_timeout
        self._bounds = bounds

    @abc.abstractmethod
    def build(self, request: Request) -> UpstreamRequest: ...

    @abc.abstractmethod
    def decoder(self, request: Request) -> StreamDecoder: ...

    def with_options(self, request: Request, body: JSON) -> JSON:
        """`body` with the request's provider options for this adapter
        merged over it (options.py): `build` ends with it."""
        options = merged_options(request, self.option_names)
        return deep_merge(body, options) if options else body

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
        except UNREADABLE:
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
        read is what is waiting). The answer ends at the provider's terminal
        event (`decoder.done`), whether or not the upstream closes the body
        then. Leaving the iteration early (cancellation, deadline, a bound
        exceeded) closes the HTTP response."""
        upstream = self.build(request)
        decoder = self.decoder(request)
        decoder.bound(self._bounds)
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
                        yield self._checked(event)
                    if decoder.failure is not None:
                        raise decoder.failure
                    if decoder.done:
                        await response.finish()
                        break
                    if coalesce_within and any(isinstance(e, DELTAS) for e in batch):
                        # A delta just left: let what arrives meanwhile join the next.
                        await asyncio.sleep(coalesce_within)
            for event in decoder.close():
                yield self._checked(event)
        except TRANSPORT_ERRORS as exc:
            failure = transport_error(self.provider, exc)
            raise failure from None
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if exchange is not None:
                exchange.end(failure)

    def _checked(self, event: Event) -> Event:
        """`event`, if its shape is the domain's (shapes.py)."""
        if (problem := misshapen(event)) is not None:
            raise upstream_protocol_error(self.provider, f"unreadable answer: {problem}")
        return event

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
