"""Closed-loop load generator, run as its own process (pinned by the harness
to the client core): N workers, each sending its next request as soon as the
previous one ends, for `warmup + duration` seconds. Only requests that end
inside the measurement window (after the warmup) count; the CPU time of the
watched processes is read at the window's edges. Prints one JSON LoadResult.

Modes:
  grpc-chat   GatewayService.Chat over one grpc.aio channel. Responses are
              kept as raw bytes (no protobuf parsing on the client). On the
              nginx routes every stream is compared message for message,
              byte for byte, with the expected one (start, 50 deltas, usage,
              finish); with --cache a start that differs only in
              `cache_hit: true` is accepted too, and hits and misses are
              counted. On the mock route (ids and usage are the mock's own)
              the check is the tag byte of every message. TTFC = the first
              delta message.
  grpc-embed  GatewayService.Embed (unary), checked byte for byte.
  http-sse    POST of the OpenAI chat body on N keep-alive HTTP/1.1
              connections (a minimal asyncio client, no HTTP library), the
              body checked byte for byte. TTFC = the first content chunk
              (the second SSE event) received.
  http-json   POST of the embeddings body, checked byte for byte.

Run: python -m bench.loadgen --mode grpc-chat --target 127.0.0.1:PORT ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError

from bench import procfs, workload
from bench.stats import LoadResult, distribution
from sluice_client.v1 import gateway_pb2 as pb

CHAT_METHOD = "/sluice.v1.GatewayService/Chat"
EMBED_METHOD = "/sluice.v1.GatewayService/Embed"
EXPECTED_CHAT_TAGS = bytes(
    [workload.TAG_START]
    + [workload.TAG_DELTA] * workload.CHUNKS
    + [workload.TAG_USAGE, workload.TAG_FINISH]
)
CALL_TIMEOUT = 30.0


class BadResponseError(Exception):
    """A response that is not the expected one."""


# What one request returns: the TTFC timestamp (perf_counter) or None, and
# whether the answer was a cache hit (None when the mode cannot tell).
Reply = tuple[float | None, bool | None]
Request = Callable[[], Awaitable[Reply]]


@dataclass
class Window:
    start: float
    end: float
    latencies: list[float] = field(default_factory=list)
    ttfcs: list[float] = field(default_factory=list)
    errors: int = 0
    error_sample: str = ""
    connections: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    calls_total: int = 0  # successful, warmup included


async def _worker(request: Request, window: Window) -> None:
    while (started := time.perf_counter()) < window.end:
        try:
            first, hit = await request()
        except (TimeoutError, grpc.RpcError, BadResponseError, OSError) as exc:
            ended = time.perf_counter()
            if window.start <= ended <= window.end:
                window.errors += 1
                window.error_sample = window.error_sample or f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.01)  # a failing target must not spin the loop
            continue
        ended = time.perf_counter()
        window.calls_total += 1
        if window.start <= ended <= window.end:
            window.latencies.append((ended - started) * 1000)
            if first is not None:
                window.ttfcs.append((first - started) * 1000)
            if hit is not None:
                if hit:
                    window.cache_hits += 1
                else:
                    window.cache_misses += 1


# --- gRPC -----------------------------------------------------------------------


def _grpc_requests(
    mode: str, target: str, route: str, accept_hits: bool
) -> tuple[Request, Callable[[], Awaitable[None]]]:
    channel = grpc.aio.insecure_channel(target)
    if mode == "grpc-chat":
        # No (de)serializers: bytes in, bytes out, no protobuf work on the client.
        chat: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(CHAT_METHOD)
        payload = workload.chat_request(route).SerializeToString()
        if route in workload.NGINX_CHAT_ROUTES:
            return _checked_chat(chat, payload, route, accept_hits), channel.close

        async def chat_once() -> Reply:
            tags = bytearray()
            first: float | None = None
            async for message in chat(payload, timeout=CALL_TIMEOUT):
                tags += message[:1]
                if first is None and len(tags) == 2:
                    first = time.perf_counter()
            if tags != EXPECTED_CHAT_TAGS:
                raise BadResponseError(f"unexpected stream shape: {bytes(tags).hex()}")
            return first, None

        return chat_once, channel.close

    embed: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EMBED_METHOD)
    payload = workload.embed_request(route).SerializeToString()
    # Every field the echo server sets must match; fields a server adds are fine.
    expected = workload.embed_response().ListFields()

    async def embed_once() -> Reply:
        reply = pb.EmbedResponse.FromString(await embed(payload, timeout=CALL_TIMEOUT))
        if any(getattr(reply, field.name) != value for field, value in expected):
            raise BadResponseError(f"unexpected embed response: {reply}")
        return None, None

    return embed_once, channel.close


def _checked_chat(
    chat: grpc.aio.UnaryStreamMultiCallable[bytes, bytes],
    payload: bytes,
    route: str,
    accept_hits: bool,
) -> Request:
    """Chat on an nginx route, every message compared with the expected bytes
    once runs of text deltas are joined (how many messages carry the text
    depends on timing: Sluice coalesces deltas that are ready together). A
    cache hit's start is the miss's plus `cache_hit: true` (field 5), and
    the rest is identical: that one difference is accepted with
    `accept_hits`, and tells a hit from a miss."""
    expected = _joined([m.SerializeToString() for m in workload.chat_responses(route)])
    miss_start, rest = expected[0], expected[1:]
    hit = workload.chat_responses(route, cache_hit=True)[0].SerializeToString()
    starts = {miss_start: False}
    if accept_hits:
        starts[hit] = True

    async def chat_once() -> Reply:
        messages: list[bytes] = []
        first: float | None = None
        async for message in chat(payload, timeout=CALL_TIMEOUT):
            messages.append(message)
            if first is None and len(messages) == 2:
                first = time.perf_counter()
        messages = _joined(messages)
        cache_hit = starts.get(messages[0]) if messages else None
        if messages:
            messages[-1] = _without_attempts(messages[-1], attempts=0 if cache_hit else 1)
        if cache_hit is None or messages[1:] != rest:
            raise BadResponseError(_difference(messages, expected, accept_hits))
        return first, cache_hit if accept_hits else None

    return chat_once


def _joined(messages: list[bytes]) -> list[bytes]:
    """`messages` with each run of text deltas as one delta."""
    joined: list[bytes] = []
    text: list[str] = []
    for raw in messages:
        message = pb.ChatResponse.FromString(raw)
        if message.WhichOneof("event") == "delta" and message.delta.WhichOneof("content") == "text":
            text.append(message.delta.text)
            continue
        if text:
            joined.append(pb.ChatResponse(delta=pb.Delta(text="".join(text))).SerializeToString())
            text.clear()
        joined.append(raw)
    return joined


def _without_attempts(finish: bytes, attempts: int) -> bytes:
    """The finish message with its `attempts` (timings vary) checked and
    cleared: a miss made one successful attempt, a cache hit none."""
    message = pb.ChatResponse.FromString(finish)
    recorded = message.finish.attempts
    if len(recorded) != attempts or any(a.outcome != pb.ATTEMPT_OUTCOME_SUCCESS for a in recorded):
        raise BadResponseError(f"unexpected attempts: {list(recorded)}")
    del recorded[:]
    return message.SerializeToString()


def _difference(got: list[bytes], expected: list[bytes], accept_hits: bool) -> str:
    """Where a stream differs from the expected one, for the error sample."""
    if len(got) != len(expected):
        return f"{len(got)} messages instead of {len(expected)}"
    index = next((i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e), 0)
    if index == 0:
        try:
            start = pb.ChatResponse.FromString(got[0]).start
        except DecodeError:
            start = None
        if start is not None and start.cache_hit and not accept_hits:
            return "a cache hit (start.cache_hit) on a row that expects none"
    return f"message {index} is {got[index][:120]!r}, expected {expected[index][:120]!r}"


# --- HTTP/1.1 -------------------------------------------------------------------


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request at a time; Content-Length bodies."""

    def __init__(self, ttfc_events: int) -> None:
        self._ttfc_events = ttfc_events
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._body_start = -1
        self._length = 0
        self._status = 0
        self._first: float | None = None
        self._waiter: asyncio.Future[tuple[int, bytes, float | None]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("connection closed"))

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, bytes, float | None]]:
        assert self._transport is not None
        self._buffer.clear()
        self._body_start = -1
        self._first = None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._body_start < 0:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            self._status = int(head[0].split(" ", 2)[1])
            self._length = -1
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    self._length = int(value)
            self._body_start = end + 4
            if self._length < 0 and self._waiter is not None:
                self._waiter.set_exception(BadResponseError("response without Content-Length"))
                return
        if (
            self._first is None
            and self._ttfc_events
            and self._buffer.count(b"\n\n", self._body_start) >= self._ttfc_events
        ):
            self._first = time.perf_counter()
        done = len(self._buffer) - self._body_start >= self._length
        if done and self._waiter is not None and not self._waiter.done():
            body = bytes(self._buffer[self._body_start :])
            self._waiter.set_result((self._status, body, self._first))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _http_requests(
    mode: str, target: str, window: Window
) -> tuple[Callable[[], Request], Callable[[], Awaitable[None]]]:
    host, _, port = target.rpartition(":")
    if mode == "http-sse":
        path, body, expected = (
            "/v1/chat/completions",
            workload.upstream_chat_body(),
            workload.sse_body(),
        )
        ttfc_events = 2  # the role chunk, then the first content chunk
    else:
        path, body, expected = (
            "/v1/embeddings",
            workload.upstream_embed_body(),
            workload.embeddings_body(),
        )
        ttfc_events = 0
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: {target}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {workload.API_KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    connections: list[_HttpConnection] = []

    async def connect() -> _HttpConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: _HttpConnection(ttfc_events), host, int(port)
        )
        connections.append(protocol)
        window.connections += 1
        return protocol

    def make_worker() -> Request:
        current: list[_HttpConnection] = []

        async def once() -> Reply:
            if not current or current[0].closed:
                current[:] = [await connect()]
            status, got, first = await asyncio.wait_for(current[0].request(raw), CALL_TIMEOUT)
            if status != 200 or got != expected:
                raise BadResponseError(f"HTTP {status}: {got[:200]!r}")
            return first, None

        return once

    async def close() -> None:
        for connection in connections:
            connection.close()

    return make_worker, close


# --- driver ---------------------------------------------------------------------


async def run(
    *,
    mode: str,
    target: str,
    route: str,
    concurrency: int,
    warmup: float,
    duration: float,
    watch: dict[str, list[int]],
    accept_hits: bool = False,
) -> LoadResult:
    now = time.perf_counter()
    window = Window(start=now + warmup, end=now + warmup + duration)
    if mode.startswith("grpc"):
        request, close = _grpc_requests(mode, target, route, accept_hits)
        window.connections = 1
        workers = [request] * concurrency
    else:
        make_worker, close = _http_requests(mode, target, window)
        workers = [make_worker() for _ in range(concurrency)]
    tasks = [asyncio.create_task(_worker(worker, window)) for worker in workers]
    try:
        await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
        cpu_before = {name: procfs.total_cpu_seconds(pids) for name, pids in watch.items()}
        client_before = time.process_time()
        await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
        cpu_after = {name: procfs.total_cpu_seconds(pids) for name, pids in watch.items()}
        client_after = time.process_time()
        _, pending = await asyncio.wait(tasks, timeout=CALL_TIMEOUT)
        for task in pending:
            task.cancel()
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await close()
    return LoadResult(
        requests=len(window.latencies),
        errors=window.errors,
        error_sample=window.error_sample,
        seconds=duration,
        latency_ms=distribution(window.latencies),
        ttfc_ms=distribution(window.ttfcs),
        cpu_seconds={name: cpu_after[name] - cpu_before[name] for name in watch},
        client_cpu_seconds=client_after - client_before,
        client_connections=window.connections,
        cache_hits=window.cache_hits,
        cache_misses=window.cache_misses,
        calls_total=window.calls_total,
    )


def _parse_watch(values: list[str]) -> dict[str, list[int]]:
    """NAME=PID[,PID...] arguments."""
    watch: dict[str, list[int]] = {}
    for value in values:
        name, _, pids = value.partition("=")
        watch[name] = [int(pid) for pid in pids.split(",") if pid]
    return watch


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument(
        "--mode", required=True, choices=["grpc-chat", "grpc-embed", "http-sse", "http-json"]
    )
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--route", default=workload.CHAT_ROUTE, help="gRPC modes: the route")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--watch", action="append", default=[], help="NAME=PID[,PID...]")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="grpc-chat: accept cache hits (start.cache_hit) and count hits and misses",
    )
    args = parser.parse_args()
    result = asyncio.run(
        run(
            mode=args.mode,
            target=args.target,
            route=args.route,
            concurrency=args.concurrency,
            warmup=args.warmup,
            duration=args.duration,
            watch=_parse_watch(args.watch),
            accept_hits=args.cache,
        )
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
