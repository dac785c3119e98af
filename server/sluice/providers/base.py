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
import base64
import json
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import httpx

from sluice.domain import (
    ChatRequest,
    Embeddings,
    Event,
    Finish,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Request,
    Role,
    Start,
    TextPart,
    ToolCallPart,
    Usage,
)
from sluice.errors import (
    GatewayError,
    invalid_argument,
    upstream_protocol_error,
    upstream_timeout,
    upstream_unreachable,
)
from sluice.providers.framing import FramingError, LineDecoder
from sluice.providers.sse import SSEDecoder, SSEEvent

if TYPE_CHECKING:
    from sluice.telemetry.upstream import UpstreamSpan

Frame = TypeVar("Frame")


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    json: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"
    # `json` serialized, when a signature covers the exact bytes (SigV4).
    content: bytes | None = None


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


class SSEStreamDecoder(FramedStreamDecoder[SSEEvent]):
    """Frames are Server-Sent Events."""

    def __init__(self) -> None:
        super().__init__()
        self._sse = SSEDecoder()

    def _split(self, data: bytes) -> list[SSEEvent]:
        return self._sse.feed(data)

    def _split_rest(self) -> list[SSEEvent]:
        return self._sse.close()

    def _describe(self, frame: SSEEvent) -> str:
        return f"{frame.event} event"


class NDJSONStreamDecoder(FramedStreamDecoder[bytes]):
    """Frames are newline-delimited JSON lines (still raw bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self._lines = LineDecoder()

    def _split(self, data: bytes) -> list[bytes]:
        return self._lines.feed(data)

    def _split_rest(self) -> list[bytes]:
        return self._lines.close()

    def _describe(self, frame: bytes) -> str:
        return "line"


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
            start, embeddings, usage = self._read(json.loads(self._body))
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
        connect_timeout: float | None = None,
        trace: UpstreamSpan | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Yield the events of the answer to `request` as they arrive;
        `connect_timeout` bounds opening a connection (None: the default);
        HTTP requests are traced under `trace`, the attempt's span."""


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

    async def stream(
        self,
        request: Request,
        *,
        connect_timeout: float | None = None,
        trace: UpstreamSpan | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Call the upstream and yield its events as they arrive. Leaving the
        iteration early (cancellation, deadline) closes the HTTP response."""
        upstream = self.build(request)
        decoder = self.decoder(request)
        timeout = self._client.timeout
        if connect_timeout is not None:
            timeout = httpx.Timeout(
                connect=connect_timeout, read=timeout.read, write=timeout.write, pool=timeout.pool
            )
        span = trace.http(upstream.method, upstream.url) if trace is not None else None
        failure: BaseException | None = None
        try:
            async with self._client.stream(
                upstream.method,
                upstream.url,
                json=upstream.json if upstream.content is None else None,
                content=upstream.content,
                headers=upstream.headers if span is None else span.headers(upstream.headers),
                timeout=timeout,
            ) as response:
                if span is not None:
                    span.response(response.status_code)
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
        except httpx.ConnectTimeout:
            failure = upstream_timeout(self.provider, "connect", "could not connect in time")
            raise failure from None
        except httpx.TimeoutException as exc:
            failure = upstream_unreachable(self.provider, f"timed out ({type(exc).__name__})")
            raise failure from None
        except httpx.TransportError as exc:
            failure = upstream_unreachable(self.provider, _describe(exc))
            raise failure from None
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if span is not None:
                span.end(failure)


@dataclass(frozen=True, slots=True)
class Turn:
    """One side's turn: each part with its request field path."""

    assistant: bool
    parts: list[tuple[Part, str]]


def alternating_turns(messages: Sequence[Message]) -> tuple[list[str], list[Turn]]:
    """System texts, and the conversation as alternating user/assistant turns,
    for APIs that want them so (Anthropic, Bedrock, Gemini): consecutive
    messages of one side merge, tool results answer on the user's side, and
    empty text parts, which these APIs reject, are dropped."""
    system: list[str] = []
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        if message.role is Role.SYSTEM:
            system.extend(p.text for p in message.parts if isinstance(p, TextPart) and p.text)
            continue
        assistant = message.role is Role.ASSISTANT
        parts = [
            (part, f"messages[{i}].parts[{j}]")
            for j, part in enumerate(message.parts)
            if not (isinstance(part, TextPart) and not part.text)
        ]
        if turns and turns[-1].assistant == assistant:
            turns[-1].parts.extend(parts)
        elif parts:
            turns.append(Turn(assistant, parts))
    return system, turns


def json_headers(bearer: str = "") -> dict[str, str]:
    """Headers of a JSON request, with `Authorization: Bearer` when a key is
    set: self-hosted servers often run without one."""
    headers = {"content-type": "application/json"}
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    return headers


def tool_call_arguments(part: ToolCallPart, field: str) -> dict[str, Any]:
    """A tool call's arguments as an object, for providers that take one;
    `field` names the part in the INVALID_ARGUMENT if they are not."""
    field = f"{field}.tool_call.arguments"
    try:
        # Some providers stream a call without arguments as "".
        value = json.loads(part.arguments or "{}")
    except ValueError as exc:
        raise invalid_argument(field, f"tool call arguments are not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid_argument(field, "tool call arguments must be a JSON object")
    return value


def image_data_url(part: ImagePart, field: str) -> str:
    """An image as the URL that OpenAI-style APIs take: its own URL, or inline
    bytes as a data URL (which needs the media type)."""
    if not part.data:
        return part.url
    if not part.media_type:
        raise invalid_argument(field, "an inline image needs its media type")
    return f"data:{part.media_type};base64,{base64.b64encode(part.data).decode('ascii')}"


def refuse_images(request: ChatRequest, provider: str) -> None:
    """INVALID_ARGUMENT naming the first image part, for providers without vision."""
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.parts):
            if isinstance(part, ImagePart):
                raise invalid_argument(
                    f"messages[{i}].parts[{j}].image", f"{provider} does not accept images"
                )


def _describe(exc: httpx.TransportError) -> str:
    detail = str(exc) or type(exc).__name__
    return f"connection failed: {detail}"


MAX_ERROR_TEXT = 500  # characters of a non-JSON error body worth quoting


def quoted_body(body: bytes) -> str:
    """The start of an error body that is not the provider's JSON (a proxy's
    HTML page, plain text), for the error message."""
    return body.decode("utf-8", "replace").strip()[:MAX_ERROR_TEXT]


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
