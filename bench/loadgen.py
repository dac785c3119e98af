"""Closed-loop load generator, run as its own process (pinned by the harness
to the client core): N workers, each sending its next request as soon as the
previous one ends, for `warmup + duration` seconds. Only requests that end
inside the measurement window count; the CPU time of the watched processes is
read at the window's edges. Prints one JSON LoadResult.

Modes:
  grpc-chat   GatewayService.Chat over one grpc.aio channel. Responses are
              kept as raw bytes (no protobuf parsing on the client while
              they are as expected). On the nginx and paced routes every
              stream is compared message for message, byte for byte, with
              the expected one (start, 50 deltas, usage, finish); a stream
              whose deltas were coalesced (fewer, each with several tokens)
              is accepted when its deltas' text is the reply's. With --cache
              a start that differs only in `cache_hit: true` is accepted
              too, and hits and misses are counted; on the semantic route
              every call's user text is new, and a hit counts only when its
              start carries `cache_similarity`. On the mock route (ids
              and usage are the mock's own) the check is the tag byte of
              every message. TTFC = the first delta message.
  grpc-embed  GatewayService.Embed (unary), checked field by field.
  http-sse    POST of the OpenAI chat body on N keep-alive HTTP/1.1
              connections (a minimal asyncio client, bench/http_client.py),
              the body checked byte for byte. TTFC = the first content chunk.
  http-json   POST of the embeddings body, checked byte for byte.
  mlflow-sse  MLflow's /v1/chat/completions with "stream": true (chunked):
              HTTP 200, 50 content chunks, the finish and usage chunks.

With --spacing MS (the paced rows), every gap between two chunks of a stream
at the client, minus MS times the tokens the later chunk brought, is one
sample of the added inter-token delay.

Run: python -m bench.loadgen --mode grpc-chat --target 127.0.0.1:PORT ...
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise

import grpc
from google.protobuf.message import DecodeError

from bench import mlflow_gateway, procfs, workload
from bench.http_client import HttpConnection, Response
from bench.stats import LoadResult, distribution
from sluice_client.v1 import gateway_pb2 as pb

CHAT_METHOD = "/sluice.v1.GatewayService/Chat"
EMBED_METHOD = "/sluice.v1.GatewayService/Embed"
CALL_TIMEOUT = 30.0
MODES = ("grpc-chat", "grpc-embed", "http-sse", "http-json", "mlflow-sse")


class BadResponseError(Exception):
    """A response that is not the expected one."""


@dataclass
class Reply:
    """What one request returned: when each chunk carrying tokens arrived
    (perf_counter) with the tokens received by then, and whether the answer
    was a cache hit (None when the mode cannot tell)."""

    marks: list[tuple[float, int]] = field(default_factory=list)
    cache_hit: bool | None = None


Request = Callable[[], Awaitable[Reply]]


@dataclass
class Window:
    start: float
    end: float
    spacing_ms: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfcs: list[float] = field(default_factory=list)
    added_gaps: list[float] = field(default_factory=list)
    errors: int = 0
    error_sample: str = ""
    connections: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    calls_total: int = 0  # successful, warmup included

    def record(self, started: float, ended: float, reply: Reply) -> None:
        self.calls_total += 1
        if not self.start <= ended <= self.end:
            return
        self.latencies.append((ended - started) * 1000)
        if reply.marks:
            self.ttfcs.append((reply.marks[0][0] - started) * 1000)
        if self.spacing_ms:
            self.added_gaps += [
                (later - earlier) * 1000 - (tokens - before) * self.spacing_ms
                for (earlier, before), (later, tokens) in pairwise(reply.marks)
            ]
        if reply.cache_hit is not None:
            if reply.cache_hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1


async def _worker(request: Request, window: Window) -> None:
    while (started := time.perf_counter()) < window.end:
        try:
            reply = await request()
        except (TimeoutError, grpc.RpcError, BadResponseError, OSError) as exc:
            ended = time.perf_counter()
            if window.start <= ended <= window.end:
                window.errors += 1
                window.error_sample = window.error_sample or f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.01)  # a failing target must not spin the loop
            continue
        window.record(started, time.perf_counter(), reply)


# --- gRPC -----------------------------------------------------------------------


def _grpc_requests(
    mode: str, target: str, route: str, accept_hits: bool
) -> tuple[Request, Callable[[], Awaitable[None]]]:
    channel = grpc.aio.insecure_channel(target)
    if mode == "grpc-chat":
        # No (de)serializers: bytes in, bytes out, no protobuf work on the client.
        chat: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(CHAT_METHOD)
        if route in workload.KNOWN_CHAT_ROUTES:
            payloads = workload.chat_payloads(route)
            return checked_chat(chat, payloads, route, accept_hits), channel.close
        payload = workload.chat_request(route).SerializeToString()

        async def chat_once() -> Reply:
            tags = bytearray()
            first: float | None = None
            async for message in chat(payload, timeout=CALL_TIMEOUT):
                tags += message[:1]
                if first is None and len(tags) == 2:
                    first = time.perf_counter()
            if not _chat_shaped(tags):
                raise BadResponseError(f"unexpected stream shape: {bytes(tags).hex()}")
            return Reply([(first, 1)] if first is not None else [])

        return chat_once, channel.close

    embed: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EMBED_METHOD)
    payload = workload.embed_request(route).SerializeToString()
    # Every field the echo server sets must match; fields a server adds are fine.
    expected = workload.embed_response().ListFields()

    async def embed_once() -> Reply:
        reply = pb.EmbedResponse.FromString(await embed(payload, timeout=CALL_TIMEOUT))
        if any(getattr(reply, field.name) != value for field, value in expected):
            raise BadResponseError(f"unexpected embed response: {reply}")
        return Reply()

    return embed_once, channel.close


def _chat_shaped(tags: bytes | bytearray) -> bool:
    """start, one delta or more, usage, finish."""
    return (
        len(tags) >= 4
        and tags[0] == workload.TAG_START
        and tags[-2:] == bytes([workload.TAG_USAGE, workload.TAG_FINISH])
        and tags[1:-2].count(workload.TAG_DELTA) == len(tags) - 3
    )


def checked_chat(
    chat: grpc.aio.UnaryStreamMultiCallable[bytes, bytes],
    payloads: Callable[[], bytes],
    route: str,
    accept_hits: bool,
    timeout: float = CALL_TIMEOUT,
) -> Request:
    """Chat on a route of known answer (each call's request from `payloads`),
    every message compared with the expected bytes (or, coalesced, the
    deltas' text with the reply). A cache hit's start is the miss's plus
    `cache_hit: true` (field 5), and the rest is identical: that one
    difference is accepted with `accept_hits`, and tells a hit from a miss.
    On SEMANTIC_ROUTE a hit counts only if it is a semantic one (its start's
    `cache_similarity` set, at or above the threshold): an exact hit there is
    counted as a miss, for the row measures what a semantic hit costs."""
    expected = [message.SerializeToString() for message in workload.chat_responses(route)]
    miss_start, rest = expected[0], expected[1:]
    hit = workload.chat_responses(route, cache_hit=True)[0].SerializeToString()
    starts = {miss_start: False}
    if accept_hits:
        starts[hit] = True
    semantic = route == workload.SEMANTIC_ROUTE

    async def chat_once() -> Reply:
        messages: list[bytes] = []
        times: list[float] = []
        async for message in chat(payloads(), timeout=timeout):
            messages.append(message)
            times.append(time.perf_counter())
        similar = False
        if messages:
            messages[0], similar = _checked_start(messages[0], semantic)
        cache_hit = starts.get(messages[0]) if messages else None
        if messages:
            messages[-1] = _without_attempts(messages[-1], attempts=0 if cache_hit else 1)
        if cache_hit is None:
            raise BadResponseError(_difference(messages, expected, accept_hits))
        if messages[1:] == rest:
            marks = list(zip(times[1:-2], range(1, workload.CHUNKS + 1), strict=True))
        else:
            marks = _coalesced_marks(messages, times, expected)
        if semantic:
            cache_hit = _semantic_hit(cache_hit, similar)
        return Reply(marks, cache_hit if accept_hits else None)

    return chat_once


def _coalesced_marks(
    messages: list[bytes], times: list[float], expected: list[bytes]
) -> list[tuple[float, int]]:
    """The marks of a stream whose deltas hold several tokens each; raises
    unless it is the expected one but for that (usage and finish the same,
    the deltas' text the reply)."""
    if len(messages) < 4 or messages[-2:] != expected[-2:]:
        raise BadResponseError(_difference(messages, expected, accept_hits=False))
    marks: list[tuple[float, int]] = []
    text = ""
    for message, arrived in zip(messages[1:-2], times[1:-2], strict=True):
        try:
            event = pb.ChatResponse.FromString(message)
        except DecodeError:
            event = pb.ChatResponse()
        if event.WhichOneof("event") != "delta":
            raise BadResponseError(f"a {event.WhichOneof('event')} among the deltas")
        text += event.delta.text
        marks.append((arrived, bisect.bisect_right(workload.TOKEN_ENDS, len(text))))
    if text != workload.REPLY:
        raise BadResponseError(f"the deltas' text is {text[:120]!r}, not the reply")
    return marks


def _checked_start(start: bytes, semantic: bool) -> tuple[bytes, bool]:
    """The start message with its `call_id` (new for every call) checked and
    cleared; with `semantic` its `cache_similarity` (a semantic hit's) too,
    checked to be at or above the threshold; and whether that was set."""
    message = pb.ChatResponse.FromString(start)
    if not message.start.call_id:
        raise BadResponseError("the start carries no call_id")
    message.start.call_id = ""
    similar = semantic and message.start.HasField("cache_similarity")
    if similar:
        similarity = message.start.cache_similarity
        if not workload.SEMANTIC_THRESHOLD <= similarity <= 1.0:
            raise BadResponseError(f"cache_similarity {similarity} below the threshold or above 1")
        message.start.ClearField("cache_similarity")
    return message.SerializeToString(), similar


def _semantic_hit(cache_hit: bool, similar: bool) -> bool:
    """Whether a call on SEMANTIC_ROUTE was answered by the semantic cache;
    raises if its start has a similarity but is no hit."""
    if similar and not cache_hit:
        raise BadResponseError("cache_similarity set on a start without cache_hit")
    return similar


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


def _http_call(mode: str) -> tuple[str, bytes, Callable[[Response], str]]:
    """The path, the body and the check (an error message, "" when good) of
    an HTTP mode."""
    if mode == "http-sse":
        expected = workload.sse_body()
        return "/v1/chat/completions", workload.upstream_chat_body(), _same_as(expected)
    if mode == "http-json":
        expected = workload.embeddings_body()
        return "/v1/embeddings", workload.upstream_embed_body(), _same_as(expected)
    call = mlflow_gateway.STREAM
    return call.path, call.body, call.check


def _same_as(expected: bytes) -> Callable[[Response], str]:
    def check(response: Response) -> str:
        if response.status != 200 or response.body != expected:
            return f"HTTP {response.status}: {response.body[:200]!r}"
        return ""

    return check


def _http_requests(
    mode: str, target: str, window: Window
) -> tuple[Callable[[], Request], Callable[[], Awaitable[None]]]:
    host, _, port = target.rpartition(":")
    path, body, check = _http_call(mode)
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: {target}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {workload.API_KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    connections: list[HttpConnection] = []

    async def connect() -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(HttpConnection, host, int(port))
        connections.append(protocol)
        window.connections += 1
        return protocol

    def make_worker() -> Request:
        current: list[HttpConnection] = []

        async def once() -> Reply:
            if not current or current[0].closed:
                current[:] = [await connect()]
            response = await asyncio.wait_for(current[0].request(raw), CALL_TIMEOUT)
            problem = check(response)
            if problem:
                raise BadResponseError(problem)
            times = response.token_times()
            return Reply([(time_, i + 1) for i, time_ in enumerate(times)])

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
    spacing_ms: float = 0.0,
) -> LoadResult:
    now = time.perf_counter()
    window = Window(start=now + warmup, end=now + warmup + duration, spacing_ms=spacing_ms)
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
        added_gap_ms=distribution(window.added_gaps),
        statuses={},
        retry_hinted=0,
        peak_open=0,
    )


def parse_watch(values: list[str]) -> dict[str, list[int]]:
    """NAME=PID[,PID...] arguments."""
    watch: dict[str, list[int]] = {}
    for value in values:
        name, _, pids = value.partition("=")
        watch[name] = [int(pid) for pid in pids.split(",") if pid]
    return watch


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--mode", required=True, choices=MODES)
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
    parser.add_argument(
        "--spacing", type=float, default=0.0, help="the upstream's token spacing (ms): gaps"
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
            watch=parse_watch(args.watch),
            accept_hits=args.cache,
            spacing_ms=args.spacing,
        )
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
