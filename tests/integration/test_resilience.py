"""Retries, fallback, timeouts and circuit breaking against real loopback
upstreams that fail on cue: refuse, 500, 429 with Retry-After, stall before
the first byte, stall or reset mid-stream. Each test checks what the caller
sees (the answer, `finish.attempts`, or the error and its attempts), attempt
counts and timings, and that no upstream connection is left open."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, running_gateway
from tests.integration.test_upstream_failures import REQUEST, call_and_fail, details
from tests.recordings import recording
from tests.timing import TIMER_RESOLUTION
from tests.upstream import FakeUpstream, Reply, SeenRequest

TOLERANCE = 0.3  # seconds a timing may run over, gRPC and HTTP included
FAST = {"initial": 0.01, "max": 0.05}

SSE_EVENTS = [e + b"\n\n" for e in recording("openai_chat_stream.txt").split(b"\n\n") if e]
TEXT = (
    "I'm unable to provide real-time weather updates. To get the current weather in San "
    "Francisco, I recommend checking a reliable weather website or a weather app."
)


def answer(**reply: Any) -> Reply:
    """The recorded OpenAI stream, one SSE event a chunk; the first event
    opens the stream (Start), the second carries the first token."""
    return Reply(chunks=SSE_EVENTS, **reply)


OK = answer()
SERVER_ERROR = Reply.json(500, {"error": {"message": "boom", "type": "server_error"}})


def in_turn(*replies: Reply) -> Callable[[SeenRequest], Reply]:
    """One reply per request, the last one again once they run out."""
    queue: Iterator[Reply] = iter(replies)
    last = replies[-1]
    return lambda _request: next(queue, last)


def target(base_url: str, model: str, **settings: Any) -> dict[str, Any]:
    return {"model": {"provider": "openai", "name": model, "api_base": base_url}, **settings}


def config(*targets: dict[str, Any], **route: Any) -> dict[str, Any]:
    retries = {"max_attempts": 1, "backoff": FAST, "budget": 1.0} | route.pop("retries", {})
    return {
        "routes": [
            {
                "name": "up",
                "route_type": "llm/v1/chat",
                "targets": list(targets),
                "retries": retries,
                **route,
            }
        ]
    }


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@asynccontextmanager
async def gateway_over(
    settings: dict[str, Any], *upstreams: FakeUpstream
) -> AsyncIterator[RunningGateway]:
    """A gateway on `settings`; once it stops, every upstream connection it
    opened must be closed."""
    async with running_gateway(settings) as gateway:
        yield gateway
    for upstream in upstreams:
        for connection in upstream.connections:
            await asyncio.wait_for(connection.closed_event.wait(), 2)


async def chat(gateway: RunningGateway) -> list[pb.ChatResponse]:
    return [response async for response in gateway.stub.Chat(REQUEST, timeout=10)]


def attempts_of(responses: list[pb.ChatResponse]) -> list[tuple[str, int, int]]:
    finish = responses[-1].finish
    return [(a.target, a.target_index, a.outcome) for a in finish.attempts]


def reported(error: grpc.aio.AioRpcError) -> list[dict[str, Any]]:
    """The attempts in a failed call's ErrorInfo."""
    value: list[dict[str, Any]] = json.loads(details(error)["ErrorInfo"].metadata["attempts"])
    return value


def text(responses: list[pb.ChatResponse]) -> str:
    return "".join(r.delta.text for r in responses)


SUCCESS, FAILURE, TIMEOUT, SKIPPED = (
    pb.ATTEMPT_OUTCOME_SUCCESS,
    pb.ATTEMPT_OUTCOME_FAILURE,
    pb.ATTEMPT_OUTCOME_TIMEOUT,
    pb.ATTEMPT_OUTCOME_SKIPPED,
)


async def test_a_refused_connection_is_retried_then_falls_back() -> None:
    refused = closed_port()
    async with FakeUpstream(OK) as b:
        settings = config(
            target(refused, "a"), target(b.base_url, "b"), retries={"max_attempts": 2}
        )
        async with gateway_over(settings, b) as gateway:
            responses = await chat(gateway)
    assert text(responses) == TEXT
    assert responses[0].start.provider == "openai"
    assert attempts_of(responses) == [
        ("openai/a", 0, FAILURE),
        ("openai/a", 0, FAILURE),
        ("openai/b", 1, SUCCESS),
    ]
    assert "UNAVAILABLE: openai: connection failed" in responses[-1].finish.attempts[0].error
    assert len(b.requests) == 1


async def test_a_server_error_is_retried_on_the_same_target() -> None:
    async with (
        FakeUpstream(in_turn(SERVER_ERROR, OK)) as a,
        gateway_over(config(target(a.base_url, "a"), retries={"max_attempts": 3}), a) as gateway,
    ):
        responses = await chat(gateway)
    assert text(responses) == TEXT
    assert attempts_of(responses) == [("openai/a", 0, FAILURE), ("openai/a", 0, SUCCESS)]
    failed, succeeded = responses[-1].finish.attempts
    assert failed.error == "UNAVAILABLE: openai: boom"
    assert failed.duration.ToTimedelta().total_seconds() < TOLERANCE
    assert succeeded.error == ""
    assert len(a.requests) == 2


async def test_retry_after_is_honoured() -> None:
    limited = Reply.json(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "400"})
    async with FakeUpstream(in_turn(limited, OK)) as a:
        settings = config(
            target(a.base_url, "a"),
            retries={"max_attempts": 2, "backoff": {"initial": 0.01, "max": 1.0}},
        )
        async with gateway_over(settings, a) as gateway:
            started = time.monotonic()
            responses = await chat(gateway)
            elapsed = time.monotonic() - started
    assert 0.4 - TIMER_RESOLUTION <= elapsed < 0.4 + TOLERANCE
    assert attempts_of(responses) == [("openai/a", 0, FAILURE), ("openai/a", 0, SUCCESS)]
    assert responses[-1].finish.attempts[0].error == "RESOURCE_EXHAUSTED: openai: slow down"


async def test_a_retry_after_beyond_backoff_max_falls_back_at_once() -> None:
    limited = Reply.json(429, {"error": {"message": "slow down"}}, {"retry-after": "30"})
    async with FakeUpstream(limited) as a, FakeUpstream(OK) as b:
        settings = config(
            target(a.base_url, "a"), target(b.base_url, "b"), retries={"max_attempts": 3}
        )
        async with gateway_over(settings, a, b) as gateway:
            started = time.monotonic()
            responses = await chat(gateway)
            elapsed = time.monotonic() - started
    assert elapsed < TOLERANCE
    assert attempts_of(responses) == [("openai/a", 0, FAILURE), ("openai/b", 1, SUCCESS)]
    assert (len(a.requests), len(b.requests)) == (1, 1)


async def test_a_stall_before_the_first_byte_times_out_and_is_retried() -> None:
    async with FakeUpstream(in_turn(answer(head_delay=30), OK)) as a:
        settings = config(
            target(a.base_url, "a", timeouts={"first_token": 0.3}), retries={"max_attempts": 2}
        )
        async with gateway_over(settings, a) as gateway:
            started = time.monotonic()
            responses = await chat(gateway)
            elapsed = time.monotonic() - started
            stalled = a.connections[0]
            await asyncio.wait_for(stalled.closed_event.wait(), 1)
    assert 0.3 - TIMER_RESOLUTION <= elapsed < 0.3 + TOLERANCE
    assert text(responses) == TEXT
    assert attempts_of(responses) == [("openai/a", 0, TIMEOUT), ("openai/a", 0, SUCCESS)]
    timed_out = responses[-1].finish.attempts[0]
    assert timed_out.error == "UNAVAILABLE: openai: no first token within 0.3 s"
    waited = timed_out.duration.ToTimedelta().total_seconds()
    assert 0.3 - TIMER_RESOLUTION <= waited < 0.3 + TOLERANCE
    assert stalled.closed is not None
    assert stalled.closed - stalled.opened < 0.3 + TOLERANCE, "closed when the attempt gave up"


async def test_a_stall_after_the_start_falls_back_before_the_first_token() -> None:
    """The stream opened (a Start) but no token came: the caller has seen
    nothing yet, so the next target answers, with its own Start."""
    stalls = answer(delays=[0, 30])
    async with FakeUpstream(stalls) as a, FakeUpstream(OK) as b:
        settings = config(
            target(a.base_url, "a", timeouts={"first_token": 0.3}), target(b.base_url, "b")
        )
        async with gateway_over(settings, a, b) as gateway:
            responses = await chat(gateway)
    assert [r.WhichOneof("event") for r in responses].count("start") == 1
    assert text(responses) == TEXT
    assert attempts_of(responses) == [("openai/a", 0, TIMEOUT), ("openai/b", 1, SUCCESS)]
    assert a.chunks_sent == 1


async def test_a_stall_mid_stream_ends_the_stream_with_an_error() -> None:
    stalls = answer(delays=[0, 0, 0, 30])
    async with FakeUpstream(stalls) as a, FakeUpstream(OK) as b:
        settings = config(
            target(a.base_url, "a", timeouts={"idle": 0.3}),
            target(b.base_url, "b"),
            retries={"max_attempts": 3},
        )
        async with gateway_over(settings, a, b) as gateway:
            started = time.monotonic()
            received, error = await call_and_fail(gateway)
            elapsed = time.monotonic() - started
    assert text(received) == "I'm unable"
    assert not any(r.HasField("finish") for r in received)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert details(error)["ErrorInfo"].reason == "UPSTREAM_TIMEOUT"
    assert [(a["target"], a["outcome"]) for a in reported(error)] == [("openai/a", "timeout")]
    assert 0.3 - TIMER_RESOLUTION <= elapsed < 0.3 + TOLERANCE
    assert (len(a.requests), len(b.requests)) == (1, 0), "no retry, no second answer"


async def test_a_reset_mid_stream_ends_the_stream_with_an_error() -> None:
    async with FakeUpstream(answer(reset_after=3)) as a, FakeUpstream(OK) as b:
        settings = config(
            target(a.base_url, "a"), target(b.base_url, "b"), retries={"max_attempts": 3}
        )
        async with gateway_over(settings, a, b) as gateway:
            received, error = await call_and_fail(gateway)
    assert text(received) == "I'm unable"
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert [(a["target"], a["outcome"]) for a in reported(error)] == [("openai/a", "failure")]
    assert (len(a.requests), len(b.requests)) == (1, 0)


async def test_a_reset_before_the_first_token_falls_back() -> None:
    async with (
        FakeUpstream(answer(reset_after=1)) as a,
        FakeUpstream(OK) as b,
        gateway_over(config(target(a.base_url, "a"), target(b.base_url, "b")), a, b) as gw,
    ):
        responses = await chat(gw)
    assert text(responses) == TEXT
    assert attempts_of(responses) == [("openai/a", 0, FAILURE), ("openai/b", 1, SUCCESS)]


async def test_when_every_attempt_fails_the_error_lists_them() -> None:
    async with FakeUpstream(SERVER_ERROR) as a, FakeUpstream(SERVER_ERROR) as b:
        settings = config(
            target(a.base_url, "a"), target(b.base_url, "b"), retries={"max_attempts": 2}
        )
        async with gateway_over(settings, a, b) as gateway:
            received, error = await call_and_fail(gateway)
    assert received == []
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert details(error)["ErrorInfo"].reason == "UPSTREAM_UNAVAILABLE"
    attempts = reported(error)
    assert [(a["target"], a["target_index"], a["outcome"]) for a in attempts] == [
        ("openai/a", 0, "failure"),
        ("openai/a", 0, "failure"),
        ("openai/b", 1, "failure"),
        ("openai/b", 1, "failure"),
    ]
    assert {a["error"] for a in attempts} == {"UNAVAILABLE: openai: boom"}
    assert (len(a.requests), len(b.requests)) == (2, 2)


async def test_the_retry_budget_bounds_retry_load() -> None:
    async with FakeUpstream(SERVER_ERROR) as a:
        settings = config(target(a.base_url, "a"), retries={"max_attempts": 3, "budget": 0.2})
        async with gateway_over(settings, a) as gateway:
            for _ in range(5):
                await call_and_fail(gateway)
    # Retries in 10 s may reach 0.2 x (calls + 15): 2, 1, 0, 0 and 1 retries.
    assert len(a.requests) == 5 + 4


async def test_a_failing_target_is_skipped_while_its_circuit_is_open_then_probed() -> None:
    healthy = False

    def flaky(_request: SeenRequest) -> Reply:
        return OK if healthy else SERVER_ERROR

    breaker = {"failure_ratio": 0.5, "window": 10, "min_calls": 2, "cooldown": 1.0}
    async with FakeUpstream(flaky) as a, FakeUpstream(OK) as b:
        settings = config(target(a.base_url, "a"), target(b.base_url, "b"), circuit_breaker=breaker)
        async with gateway_over(settings, a, b) as gateway:

            async def states() -> list[int]:
                (route,) = (await gateway.stub.ListRoutes(pb.ListRoutesRequest())).routes
                return [t.circuit_state for t in route.targets]

            assert await states() == [pb.CIRCUIT_STATE_CLOSED] * 2
            for _ in range(2):
                responses = await chat(gateway)
                assert attempts_of(responses) == [
                    ("openai/a", 0, FAILURE),
                    ("openai/b", 1, SUCCESS),
                ]
            opened_at = time.monotonic()
            assert await states() == [pb.CIRCUIT_STATE_OPEN, pb.CIRCUIT_STATE_CLOSED]

            responses = await chat(gateway)
            assert attempts_of(responses) == [("openai/a", 0, SKIPPED), ("openai/b", 1, SUCCESS)]
            assert len(a.requests) == 2

            await asyncio.sleep(1.0 - (time.monotonic() - opened_at))
            assert await states() == [pb.CIRCUIT_STATE_HALF_OPEN, pb.CIRCUIT_STATE_CLOSED]
            healthy = True
            responses = await chat(gateway)
            assert attempts_of(responses) == [("openai/a", 0, SUCCESS)]
            assert await states() == [pb.CIRCUIT_STATE_CLOSED] * 2
