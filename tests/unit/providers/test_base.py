"""The HTTP adapter template: one way to read an error body for every
provider, one way to run an exchange, reported to its observer, under the
connect timeout the adapter was built with."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from typing import Any

import pytest

from sluice.domain import (
    ChatRequest,
    Event,
    Finish,
    FinishReason,
    GenerationParams,
    Message,
    Request,
    Role,
    TextDelta,
    TextPart,
)
from sluice.errors import GatewayError, Status
from sluice.providers.base import ErrorFields, HttpAdapter, StreamDecoder
from sluice.providers.bounds import BodyBounds
from sluice.providers.http import HttpClientPool, UpstreamClient, UpstreamRequest
from tests.upstream import FakeUpstream, Reply, unconnectable

REQUEST = ChatRequest("r", (Message(Role.USER, (TextPart("hi"),)),), GenerationParams())


class Chunks:
    """Each chunk of the body as one text delta."""

    failure: GatewayError | None = None
    done = False

    def bound(self, bounds: BodyBounds) -> None:
        pass  # holds nothing

    def feed(self, data: bytes) -> list[Event]:
        return [TextDelta(data.decode())]

    def close(self) -> list[Event]:
        return [Finish(FinishReason.STOP)]


class Echo(HttpAdapter):
    """The smallest HTTP adapter. Its errors are documented as
    {"error": {"message", "type", "status", "retry_after", "details"}}."""

    provider = "echo"

    def __init__(self, client: UpstreamClient, url: str = "http://echo/v1", **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._url = url

    def build(self, request: Request) -> UpstreamRequest:
        return UpstreamRequest(self._url, {"q": 1}, {"content-type": "application/json"})

    def decoder(self, request: Request) -> StreamDecoder:
        return Chunks()

    def error_fields(self, status: int, headers: Mapping[str, str], payload: Any) -> ErrorFields:
        error = payload["error"]  # any other shape raises: the base quotes the body
        return ErrorFields(
            error.get("message", ""),
            error.get("type", ""),
            headers.get("x-request-id", ""),
            error.get("details", {}),
            status=error.get("status"),
            retry_after=error.get("retry_after"),
        )


def metadata(status: int, error_type: str = "", request_id: str = "", **details: str) -> Any:
    """ErrorInfo metadata as the caller sees it: empty values left out."""
    given = {"upstream_type": error_type, "upstream_request_id": request_id, **details}
    return {
        "provider": "echo",
        "http_status": str(status),
        **{key: value for key, value in given.items() if value},
    }


def error(**fields: Any) -> bytes:
    return json.dumps({"error": fields}).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "retry_after"),
    [
        (
            400,
            {"x-request-id": "req-1"},
            error(message="bad field", type="invalid"),
            (Status.INVALID_ARGUMENT, "echo: bad field", metadata(400, "invalid", "req-1")),
            None,
        ),
        (
            502,
            {},
            b"<html>" + b"x" * 1000,
            (Status.UNAVAILABLE, "echo: <html>" + "x" * 494, metadata(502)),
            None,
        ),
        (
            503,
            {},
            b"",
            (Status.UNAVAILABLE, "echo: HTTP 503 with an empty body", metadata(503)),
            None,
        ),
        (
            503,
            {},
            b" \n",
            (Status.UNAVAILABLE, "echo: HTTP 503 with an empty body", metadata(503)),
            None,
        ),
        (
            500,
            {},
            error(type="x"),
            (Status.UNAVAILABLE, 'echo: {"error": {"type": "x"}}', metadata(500, "x")),
            None,
        ),
        (500, {}, b"[1, 2]", (Status.UNAVAILABLE, "echo: [1, 2]", metadata(500)), None),
        (
            429,
            {"retry-after": "7"},
            error(message="slow down", retry_after=30),
            (Status.RESOURCE_EXHAUSTED, "echo: slow down", metadata(429)),
            7.0,
        ),
        (
            429,
            {},
            error(message="slow down", retry_after=30),
            (Status.RESOURCE_EXHAUSTED, "echo: slow down", metadata(429)),
            30.0,
        ),
        (
            400,
            {},
            error(message="key invalid", status=401),
            (
                Status.INTERNAL,
                "echo rejected the gateway's credentials (HTTP 401)",
                metadata(401),
            ),
            None,
        ),
        (
            400,
            {},
            error(message="blocked", details={"verdict": "no"}),
            (Status.INVALID_ARGUMENT, "echo: blocked", metadata(400, verdict="no")),
            None,
        ),
    ],
    ids=[
        "json",
        "not-json-quoted",
        "empty",
        "blank",
        "no-message-quoted",
        "other-shape-quoted",
        "retry-after-header-first",
        "retry-after-from-body",
        "status-from-body",
        "details",
    ],
)
def test_parse_error(
    status: int,
    headers: dict[str, str],
    body: bytes,
    expected: tuple[Status, str, dict[str, str]],
    retry_after: float | None,
) -> None:
    parsed = Echo(None).parse_error(status, headers, body)  # type: ignore[arg-type]
    assert (parsed.status, parsed.message, parsed.metadata) == expected
    assert parsed.retry_after == retry_after


class Exchange:
    def __init__(self, log: list[object]) -> None:
        self.log = log

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        self.log.append("headers")
        return {**headers, "traceparent": "00-1-2-01"}

    def response(self, status_code: int) -> None:
        self.log.append(status_code)

    def end(self, error: BaseException | None = None) -> None:
        self.log.append(error)


class Observer:
    def __init__(self) -> None:
        self.log: list[object] = []

    def http(self, method: str, url: str) -> Exchange:
        self.log.append((method, url))
        return Exchange(self.log)


async def test_the_observer_sees_each_step_of_the_exchange(pool: HttpClientPool) -> None:
    observer = Observer()
    async with FakeUpstream(Reply(chunks=[b"hello"])) as upstream:
        url = f"{upstream.base_url}/v1"
        adapter = Echo(pool.client_for(url), url)
        events = [event async for event in adapter.stream(REQUEST, observer=observer)]
    assert events == [TextDelta("hello"), Finish(FinishReason.STOP)]
    assert observer.log == [("POST", url), "headers", 200, None]
    (seen,) = upstream.requests
    assert seen.headers["traceparent"] == "00-1-2-01"
    assert seen.json() == {"q": 1}


async def test_the_observer_sees_the_error_that_ended_the_exchange(pool: HttpClientPool) -> None:
    observer = Observer()
    reply = Reply(400, [error(message="no")], {"content-type": "application/json"})
    async with FakeUpstream(reply) as upstream:
        url = f"{upstream.base_url}/v1"
        adapter = Echo(pool.client_for(url), url)
        with pytest.raises(GatewayError, match="echo: no") as raised:
            [event async for event in adapter.stream(REQUEST, observer=observer)]
    assert observer.log == [("POST", url), "headers", 400, raised.value]


async def test_a_refused_connection_is_unreachable(pool: HttpClientPool) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
        base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        adapter = Echo(pool.client_for(base_url), f"{base_url}/v1")
        with pytest.raises(GatewayError) as raised:
            [event async for event in adapter.stream(REQUEST)]
    assert raised.value.reason == "UPSTREAM_UNAVAILABLE"
    assert raised.value.message.startswith("echo: connection failed: ")


async def test_the_connect_timeout_is_the_one_the_adapter_was_built_with(
    pool: HttpClientPool,
) -> None:
    with unconnectable() as base_url:
        client = pool.client_for(base_url)
        adapter = Echo(client, f"{base_url}/v1", connect_timeout=0.05)
        started = time.monotonic()
        with pytest.raises(GatewayError) as raised:
            [event async for event in adapter.stream(REQUEST)]
    assert time.monotonic() - started < 1.0
    assert (raised.value.reason, raised.value.message, raised.value.metadata["timeout"]) == (
        "UPSTREAM_TIMEOUT",
        "echo: could not connect in time",
        "connect",
    )


async def test_a_body_its_compression_cannot_undo_is_a_protocol_error(pool: HttpClientPool) -> None:
    gzip_garbage = Reply(
        chunks=[b"\x1f\x8b\x08" + b"not gzip" * 8], headers={"content-encoding": "gzip"}
    )
    async with FakeUpstream(gzip_garbage) as upstream:
        url = f"{upstream.base_url}/v1"
        with pytest.raises(GatewayError) as raised:
            [event async for event in Echo(pool.client_for(url), url).stream(REQUEST)]
    assert (raised.value.status, raised.value.reason) == (
        Status.UNAVAILABLE,
        "UPSTREAM_PROTOCOL_ERROR",
    )
    assert raised.value.message.startswith("echo: unreadable response: ")


async def test_a_body_cut_short_by_a_reset_is_unavailable(pool: HttpClientPool) -> None:
    async with FakeUpstream(Reply(chunks=[b"part", b"more", b"rest"], reset_after=2)) as upstream:
        url = f"{upstream.base_url}/v1"
        with pytest.raises(GatewayError) as raised:
            [event async for event in Echo(pool.client_for(url), url).stream(REQUEST)]
    assert (raised.value.status, raised.value.reason) == (
        Status.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
    )
    assert raised.value.message.startswith("echo: connection failed: ")
