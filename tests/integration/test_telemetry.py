"""Traces, metrics and the access log of real calls, recorded in memory: a
plain call, a cache hit, a retried call, a fallback, a failure and a limit
refusal, through a running gateway to loopback upstreams replaying the
recorded OpenAI stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from sluice.auth import hash_key
from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, running_gateway
from tests.integration.test_resilience import (
    FAST,
    OK,
    SERVER_ERROR,
    SSE_EVENTS,
    TEXT,
    answer,
    in_turn,
)
from tests.telemetry import Recorded
from tests.timing import TIMER_RESOLUTION
from tests.upstream import FakeUpstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
KEY = "sk-telemetry-test-key-never-logged"
# The recorded stream: model, id and usage as OpenAI sent them.
RESPONSE_MODEL = "gpt-4o-2024-08-06"
RESPONSE_ID = "chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL"
INPUT_TOKENS, OUTPUT_TOKENS = 14, 30
# gpt-4o at the shipped list price: 2.50 in, 10.00 out per million tokens.
COST = (INPUT_TOKENS * 2.50 + OUTPUT_TOKENS * 10.00) / 1e6
SERVER_SPAN = "sluice.v1.GatewayService/Chat"
ATTEMPT_SPAN = "chat gpt-4o"


def chat(temperature: float | None = None) -> pb.ChatRequest:
    request = pb.ChatRequest(
        route="up", messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="Weather?")])]
    )
    if temperature is not None:
        request.generation.temperature = temperature
    return request


def settings(*base_urls: str, **route: Any) -> dict[str, Any]:
    """Route `up` over one gpt-4o target per upstream, behind key `alice`."""
    targets = [
        {"model": {"provider": "openai", "name": "gpt-4o", "api_base": url, "api_key": "sk-up"}}
        for url in base_urls
    ]
    return {
        "auth": {"keys": [{"name": "alice", "sha256": hash_key(KEY)}]},
        "routes": [
            {
                "name": "up",
                "route_type": "llm/v1/chat",
                "targets": targets,
                "retries": {"max_attempts": 1, "backoff": FAST, "budget": 1.0},
                **route,
            }
        ],
    }


@asynccontextmanager
async def traced(recorded: Recorded, config: dict[str, Any]) -> AsyncIterator[RunningGateway]:
    async with running_gateway(config, telemetry=recorded.telemetry) as gateway:
        yield gateway


async def call(gateway: RunningGateway, request: pb.ChatRequest) -> list[pb.ChatResponse]:
    metadata = (("authorization", f"Bearer {KEY}"), ("traceparent", TRACEPARENT))
    return [response async for response in gateway.stub.Chat(request, metadata=metadata)]


async def one_call(recorded: Recorded, request: pb.ChatRequest) -> list[pb.ChatResponse]:
    """`request` through a gateway over one upstream answering OK."""
    async with (
        FakeUpstream(OK) as upstream,
        traced(recorded, settings(upstream.base_url)) as gateway,
    ):
        return await call(gateway, request)


def hex_span_id(span: ReadableSpan) -> str:
    return f"{span.context.span_id:016x}"


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return {
        name: tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        for name, value in (span.attributes or {}).items()
    }


# --- a plain call --------------------------------------------------------------------


async def test_a_call_is_one_trace_from_the_callers_span_to_the_upstream() -> None:
    recorded = Recorded()
    # A pause between chunks: the attempt span must last to the last one.
    async with (
        FakeUpstream(answer(delay=0.02)) as upstream,
        traced(recorded, settings(upstream.base_url)) as gateway,
    ):
        responses = await call(gateway, chat(temperature=0.5))
        base_url = upstream.base_url
    assert "".join(r.delta.text for r in responses) == TEXT

    server = recorded.one(SERVER_SPAN)
    assert server.kind is SpanKind.SERVER
    assert server.context.trace_id == int(TRACE_ID, 16)
    assert server.parent is not None
    assert server.parent.span_id == int(CALLER_SPAN_ID, 16)
    assert server.parent.is_remote
    assert {s.name for s in recorded.children(server)} == {
        "sluice.auth",
        "sluice.route",
        ATTEMPT_SPAN,
    }
    assert {s.context.trace_id for s in recorded.finished()} == {int(TRACE_ID, 16)}

    attempt = recorded.one(ATTEMPT_SPAN)
    assert attempt.kind is SpanKind.CLIENT
    seen = attributes(attempt)
    assert seen.pop("gen_ai.response.time_to_first_chunk") > 0
    assert seen == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.request.temperature": 0.5,
        "gen_ai.response.id": RESPONSE_ID,
        "gen_ai.response.model": RESPONSE_MODEL,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": INPUT_TOKENS,
        "gen_ai.usage.output_tokens": OUTPUT_TOKENS,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.cache_creation.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "sluice.route": "up",
        "sluice.attempt": 1,
        "sluice.target": "openai/gpt-4o",
        "sluice.target.index": 0,
        "sluice.variant": "openai/gpt-4o",
    }
    # Open until the last chunk: every pause between chunks is inside it.
    assert attempt.end_time is not None
    assert attempt.start_time is not None
    pauses = len(SSE_EVENTS) - 1
    assert (attempt.end_time - attempt.start_time) / 1e9 >= (0.02 - TIMER_RESOLUTION) * pauses

    (http,) = recorded.children(attempt)
    assert http.name == "POST"
    assert http.kind is SpanKind.CLIENT
    assert attributes(http)["http.response.status_code"] == 200
    assert attributes(http)["url.full"] == f"{base_url}/chat/completions"
    # The upstream joins the trace under the HTTP span.
    (sent,) = upstream.requests
    assert sent.headers["traceparent"] == f"00-{TRACE_ID}-{hex_span_id(http)}-01"

    server_attributes = attributes(server)
    assert server_attributes["rpc.grpc.status_code"] == 0
    assert server_attributes["sluice.key.name"] == "alice"
    assert server_attributes["sluice.cache_hit"] is False
    assert server_attributes["sluice.cost_usd"] == pytest.approx(COST)
    assert server.status.status_code is StatusCode.UNSET


async def test_a_call_is_measured_in_genai_and_sluice_metrics() -> None:
    recorded = Recorded()
    await one_call(recorded, chat())

    labels = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": RESPONSE_MODEL,
        "sluice.route": "up",
    }
    usage = {
        labels["gen_ai.token.type"]: point
        for labels, point in recorded.points("gen_ai.client.token.usage")
    }
    assert (usage["input"].count, usage["input"].sum) == (1, INPUT_TOKENS)
    assert (usage["output"].count, usage["output"].sum) == (1, OUTPUT_TOKENS)
    ((duration_labels, duration),) = recorded.points("gen_ai.client.operation.duration")
    assert duration_labels == labels
    assert duration.count == 1
    (first_token,) = recorded.histogram("gen_ai.server.time_to_first_token", sluice__route="up")
    assert first_token.count == 1
    (call_duration,) = recorded.histogram("gen_ai.server.request.duration", sluice__route="up")
    assert 0 < first_token.sum < call_duration.sum
    assert (
        recorded.total(
            "sluice.requests",
            sluice__route="up",
            sluice__status="OK",
            rpc__method="Chat",
            sluice__key__name="alice",
        )
        == 1
    )
    assert recorded.total("sluice.cost", sluice__key__name="alice") == pytest.approx(COST)
    (overhead,) = recorded.histogram("sluice.gateway.overhead", sluice__route="up")
    assert overhead.count == 1
    assert 0 < overhead.sum < call_duration.sum
    assert recorded.total("sluice.active_streams", rpc__method="Chat") == 0
    assert recorded.points("sluice.circuit.state") == []  # no circuit breaker configured


async def test_each_call_writes_one_access_log_line() -> None:
    recorded = Recorded()
    await one_call(recorded, chat())

    (line,) = recorded.log_lines()
    assert line.pop("time").endswith("Z")
    assert line.pop("ttft_ms") > 0
    assert line.pop("duration_ms") > 0
    assert line.pop("cost_usd") == pytest.approx(COST)
    assert len(line.pop("call_id")) == 32
    assert line == {
        "method": "Chat",
        "route": "up",
        "target": "openai/gpt-4o",
        "variant": "openai/gpt-4o",
        "key_name": "alice",
        "status": "OK",
        "reason": None,
        "attempts": 1,
        "cache_hit": False,
        "cache_similarity": None,
        "input_tokens": INPUT_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
        "cached_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "reasoning_tokens": 0,
        "usage_reported": True,
        "response_id": RESPONSE_ID,
        "trace_id": TRACE_ID,
    }
    everything = recorded.log.getvalue() + repr([attributes(s) for s in recorded.finished()])
    assert KEY not in everything
    assert "sk-up" not in everything


async def test_with_tracing_off_the_callers_trace_reaches_the_upstream_unchanged() -> None:
    async with (
        FakeUpstream(OK) as upstream,
        running_gateway(settings(upstream.base_url)) as gateway,
    ):
        await call(gateway, chat())  # with a traceparent
        metadata = (("authorization", f"Bearer {KEY}"),)
        [_ async for _ in gateway.stub.Chat(chat(), metadata=metadata)]  # without one
    traced, untraced = upstream.requests
    # No span of Sluice's own: the caller's span is the upstream request's parent.
    assert traced.headers["traceparent"] == TRACEPARENT
    assert "traceparent" not in untraced.headers


# --- a cache hit ---------------------------------------------------------------------


async def test_a_cache_hit_is_traced_without_an_upstream_attempt() -> None:
    recorded = Recorded()
    async with (
        FakeUpstream(OK) as upstream,
        traced(recorded, settings(upstream.base_url, cache={"ttl": 60})) as gateway,
    ):
        await call(gateway, chat(temperature=0))
        await call(gateway, chat(temperature=0))
    assert len(upstream.requests) == 1

    miss, hit = recorded.named(SERVER_SPAN)
    assert {s.name for s in recorded.children(miss)} == {
        "sluice.auth",
        "sluice.route",
        "sluice.cache.lookup",
        "sluice.cache.store",
        ATTEMPT_SPAN,
    }
    assert {s.name for s in recorded.children(hit)} == {
        "sluice.auth",
        "sluice.route",
        "sluice.cache.lookup",
    }
    lookups = {attributes(s)["sluice.cache.result"] for s in recorded.named("sluice.cache.lookup")}
    assert lookups == {"miss", "hit"}
    assert attributes(hit)["sluice.cache_hit"] is True
    assert attributes(hit)["gen_ai.usage.output_tokens"] == OUTPUT_TOKENS  # as replayed
    assert attributes(hit)["sluice.cost_usd"] == 0.0

    assert recorded.total("sluice.cache.lookups", sluice__cache__result="hit") == 1
    assert recorded.total("sluice.cache.lookups", sluice__cache__result="miss") == 1
    # Tokens used upstream: once. Calls answered: twice, one from the cache.
    assert [p.count for p in recorded.histogram("gen_ai.client.token.usage")] == [1, 1]
    assert recorded.total("sluice.requests", sluice__status="OK") == 2
    cached_first_token = recorded.histogram(
        "gen_ai.server.time_to_first_token", sluice__cache_hit=True
    )
    assert [p.count for p in cached_first_token] == [1]
    assert recorded.total("sluice.cost") == pytest.approx(COST)

    first, second = recorded.log_lines()
    assert (first["cache_hit"], first["attempts"], first["cost_usd"]) == (
        False,
        1,
        pytest.approx(COST),
    )
    assert (second["cache_hit"], second["attempts"], second["cost_usd"]) == (True, 0, 0.0)
    assert second["target"] is None
    assert second["output_tokens"] == OUTPUT_TOKENS


# --- a retried call and a fallback ---------------------------------------------------------


async def test_a_retried_call_has_one_span_per_attempt() -> None:
    recorded = Recorded()
    async with (
        FakeUpstream(in_turn(SERVER_ERROR, OK)) as upstream,
        traced(
            recorded, settings(upstream.base_url, retries={"max_attempts": 2, "backoff": FAST})
        ) as gateway,
    ):
        await call(gateway, chat())

    server = recorded.one(SERVER_SPAN)
    failed, succeeded = sorted(recorded.named(ATTEMPT_SPAN), key=lambda s: s.start_time or 0)
    assert recorded.children(server).count(failed) == 1
    assert failed.parent is not None
    assert failed.parent.span_id == server.context.span_id
    assert attributes(failed)["sluice.attempt"] == 1
    assert attributes(failed)["error.type"] == "UPSTREAM_UNAVAILABLE"
    assert failed.status.status_code is StatusCode.ERROR
    assert "gen_ai.usage.input_tokens" not in attributes(failed)
    assert attributes(succeeded)["sluice.attempt"] == 2
    assert "error.type" not in attributes(succeeded)
    assert attributes(server)["sluice.attempts"] == 2
    # Each attempt's HTTP request carried its own traceparent.
    http_spans = {
        hex_span_id(http) for span in (failed, succeeded) for http in recorded.children(span)
    }
    assert {r.headers["traceparent"].split("-")[2] for r in upstream.requests} == http_spans

    assert recorded.total("sluice.upstream.retries", sluice__route="up") == 1
    assert recorded.total("sluice.upstream.fallbacks") == 0
    outcomes = sorted(
        labels.get("error.type", "ok")
        for labels, _ in recorded.points("gen_ai.client.operation.duration")
    )
    assert outcomes == ["UPSTREAM_UNAVAILABLE", "ok"]
    (line,) = recorded.log_lines()
    assert (line["status"], line["attempts"]) == ("OK", 2)


async def test_a_fallback_traces_both_targets() -> None:
    recorded = Recorded()
    async with (
        FakeUpstream(SERVER_ERROR) as broken,
        FakeUpstream(OK) as healthy,
        traced(
            recorded, settings(broken.base_url, healthy.base_url, strategy="fallback")
        ) as gateway,
    ):
        responses = await call(gateway, chat())
    assert len(responses[-1].finish.attempts) == 2

    first, second = sorted(recorded.named(ATTEMPT_SPAN), key=lambda s: s.start_time or 0)
    assert (attributes(first)["sluice.target.index"], attributes(first)["error.type"]) == (
        0,
        "UPSTREAM_UNAVAILABLE",
    )
    assert attributes(second)["sluice.target.index"] == 1
    assert attributes(second)["sluice.attempt"] == 2
    assert recorded.total("sluice.upstream.fallbacks", sluice__route="up") == 1
    assert recorded.total("sluice.upstream.retries") == 0
    (line,) = recorded.log_lines()
    assert (line["target"], line["attempts"], line["status"]) == ("openai/gpt-4o", 2, "OK")


# --- failures and refusals -----------------------------------------------------------


async def test_a_failed_call_is_an_error_span_metric_and_log_line() -> None:
    recorded = Recorded()
    async with (
        FakeUpstream(SERVER_ERROR) as upstream,
        traced(recorded, settings(upstream.base_url)) as gateway,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(gateway, chat())
    assert failure.value.code() is grpc.StatusCode.UNAVAILABLE

    server = recorded.one(SERVER_SPAN)
    assert server.status.status_code is StatusCode.ERROR
    assert attributes(server)["error.type"] == "UPSTREAM_UNAVAILABLE"
    assert attributes(server)["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert recorded.total("sluice.requests", sluice__status="UNAVAILABLE") == 1
    (line,) = recorded.log_lines()
    assert (line["status"], line["reason"], line["attempts"]) == (
        "UNAVAILABLE",
        "UPSTREAM_UNAVAILABLE",
        1,
    )
    assert line["input_tokens"] is None
    assert line["cost_usd"] == 0.0


async def test_a_limit_refusal_is_counted_and_traced() -> None:
    recorded = Recorded()
    async with (
        FakeUpstream(OK) as upstream,
        traced(
            recorded,
            settings(upstream.base_url, limits={"requests": "1/minute", "tokens": "9000/minute"}),
        ) as gateway,
    ):
        await call(gateway, chat())
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            await call(gateway, chat())
    assert refusal.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

    admitted, refused = sorted(
        recorded.named("sluice.limits.admit"), key=lambda s: s.start_time or 0
    )
    assert admitted.status.status_code is StatusCode.UNSET
    assert attributes(refused)["error.type"] == "RATE_LIMITED"
    assert len(recorded.named("sluice.limits.settle")) == 1
    assert (
        recorded.total(
            "sluice.limit.refusals",
            sluice__route="up",
            sluice__limit="requests",
            sluice__limit__scope="route",
        )
        == 1
    )
    assert recorded.log_lines()[1]["status"] == "RESOURCE_EXHAUSTED"


async def test_a_bad_key_is_logged_without_the_key() -> None:
    recorded = Recorded()
    async with (
        FakeUpstream(OK) as upstream,
        traced(recorded, settings(upstream.base_url)) as gateway,
    ):
        metadata = (("authorization", "Bearer sk-wrong-key-value"),)
        with pytest.raises(grpc.aio.AioRpcError):
            await gateway.stub.Chat(chat(), metadata=metadata).read()
    (line,) = recorded.log_lines()
    assert (line["status"], line["key_name"], line["route"]) == ("UNAUTHENTICATED", None, None)
    assert attributes(recorded.one("sluice.auth"))["error.type"] == "INVALID_API_KEY"
    assert "sk-wrong-key-value" not in recorded.log.getvalue()


# --- content capture -----------------------------------------------------------------


@pytest.mark.parametrize("capture", [False, True])
async def test_message_content_is_recorded_only_when_asked(capture: bool) -> None:
    recorded = Recorded(capture_content=capture)
    request = chat()
    request.messages.insert(0, pb.Message(role=pb.ROLE_SYSTEM, parts=[pb.Part(text="Be brief.")]))
    await one_call(recorded, request)

    seen = attributes(recorded.one(ATTEMPT_SPAN))
    content = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"}
    if not capture:
        assert content.isdisjoint(seen)
        assert "Weather?" not in repr([attributes(s) for s in recorded.finished()])
        return
    assert json.loads(seen["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Be brief."}
    ]
    assert json.loads(seen["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather?"}]}
    ]
    assert json.loads(seen["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": TEXT}], "finish_reason": "stop"}
    ]


async def test_circuit_state_is_a_gauge_per_target() -> None:
    recorded = Recorded()
    breaker = {"failure_ratio": 0.5, "min_calls": 1, "window": 10, "cooldown": 60}
    async with (
        FakeUpstream(SERVER_ERROR) as broken,
        FakeUpstream(OK) as healthy,
        traced(
            recorded, settings(broken.base_url, healthy.base_url, circuit_breaker=breaker)
        ) as gateway,
    ):
        await call(gateway, chat())
        states = {
            (labels["sluice.route"], labels["sluice.target.index"]): point.value
            for labels, point in recorded.points("sluice.circuit.state")
        }
    # The broken target's circuit opened on its one failure; the other's is closed.
    assert states == {("up", 0): 2, ("up", 1): 0}


# --- other operations and shadow calls -------------------------------------------------


async def test_completions_and_embeddings_are_named_by_their_operation() -> None:
    recorded = Recorded()
    mock = {"provider": "mock", "name": "mock-1", "chunk_delay": 0}
    config = {
        "routes": [
            {"name": "complete", "route_type": "llm/v1/completions", "model": mock},
            {"name": "embed", "route_type": "llm/v1/embeddings", "model": mock},
        ]
    }
    async with traced(recorded, config) as gateway:
        [_ async for _ in gateway.stub.Complete(pb.CompleteRequest(route="complete", prompt="Hi"))]
        await gateway.stub.Embed(pb.EmbedRequest(route="embed", inputs=["a", "b"]))

    completion = recorded.one("text_completion mock-1")
    embedding = recorded.one("embeddings mock-1")
    assert attributes(completion)["gen_ai.operation.name"] == "text_completion"
    assert attributes(embedding)["gen_ai.operation.name"] == "embeddings"
    assert attributes(embedding)["gen_ai.usage.input_tokens"] == 2
    assert recorded.one("sluice.v1.GatewayService/Embed").kind is SpanKind.SERVER
    assert recorded.named("sluice.auth") == []  # auth is off: nothing to check
    assert [line["method"] for line in recorded.log_lines()] == ["Complete", "Embed"]
    assert recorded.total("sluice.requests", rpc__method="Embed", sluice__status="OK") == 1


async def test_a_shadow_call_is_an_attempt_span_marked_shadow() -> None:
    recorded = Recorded()
    async with FakeUpstream(OK) as primary, FakeUpstream(OK) as mirror:
        config = settings(primary.base_url)
        shadow_model = {"provider": "openai", "name": "gpt-4o", "api_base": mirror.base_url}
        config["routes"][0]["shadow"] = {"target": {"model": shadow_model}, "sample": 1.0}
        async with traced(recorded, config) as gateway:
            await call(gateway, chat())
            await asyncio.wait_for(mirror.request_seen.wait(), 5)
            for _ in range(100):  # the mirror ends on its own, after the call
                if recorded.total("sluice.shadow.calls") == 1:
                    break
                await asyncio.sleep(0.02)

    server = recorded.one(SERVER_SPAN)
    attempts = recorded.named(ATTEMPT_SPAN)
    assert len(attempts) == 2
    (shadow,) = [span for span in attempts if attributes(span).get("sluice.shadow")]
    assert shadow.parent is not None
    assert shadow.parent.span_id == server.context.span_id
    assert attributes(shadow)["gen_ai.usage.output_tokens"] == OUTPUT_TOKENS
    assert recorded.total("sluice.shadow.calls", sluice__shadow__outcome="success") == 1
    shadow_usage = recorded.histogram("gen_ai.client.token.usage", sluice__shadow=True)
    assert [point.count for point in shadow_usage] == [1, 1]
    # The caller's access line and cost are its own call's only.
    (line,) = recorded.log_lines()
    assert line["cost_usd"] == pytest.approx(COST)


async def test_the_gateway_overhead_leaves_out_upstream_waits_and_backoff() -> None:
    recorded = Recorded()
    slow_answer = answer(delay=0.03)  # 0.03 s before each chunk: the upstream's time
    retry = {"max_attempts": 2, "backoff": {"initial": 0.2, "max": 0.2}}
    async with (
        FakeUpstream(in_turn(SERVER_ERROR, slow_answer)) as upstream,
        traced(recorded, settings(upstream.base_url, retries=retry)) as gateway,
    ):
        await call(gateway, chat())

    (duration,) = recorded.histogram("gen_ai.server.request.duration")
    (overhead,) = recorded.histogram("sluice.gateway.overhead")
    assert duration.sum >= (0.03 - TIMER_RESOLUTION) * len(SSE_EVENTS)
    # What is left is Sluice's own work: a small part of the call.
    assert overhead.sum < 0.1 < duration.sum - overhead.sum
