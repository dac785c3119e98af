"""Strategies, rules and shadow traffic through a real Sluice server to real
loopback upstreams: a weighted split, PII prompts kept on the local model,
a tenant sent to its own route, and a mirror the caller never notices."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from sluice_client.v1 import gateway_pb2 as pb
from tests.gateway import RunningGateway, running_gateway
from tests.upstream import FakeUpstream, Reply

SSN = r"\b\d{3}-\d{2}-\d{4}\b"


def answer(text: str) -> Reply:
    """An OpenAI chat stream answering `text`."""
    chunks = [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": text}}]},
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            "id": "c1",
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        },
    ]
    body = b"".join(b"data: %s\n\n" % json.dumps(chunk).encode() for chunk in chunks)
    return Reply(chunks=[body, b"data: [DONE]\n\n"])


def model(upstream: FakeUpstream, name: str = "m") -> dict[str, Any]:
    return {"provider": "openai", "name": name, "api_base": upstream.base_url, "api_key": "sk-t"}


def chat(text: str, route: str = "r") -> pb.ChatRequest:
    return pb.ChatRequest(
        route=route, messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=text)])]
    )


async def ask(
    gateway: RunningGateway, text: str, route: str = "r", metadata: Sequence[tuple[str, str]] = ()
) -> tuple[str, pb.ChatResponse, pb.ChatResponse]:
    """The answer's text, its start and its finish."""
    responses = [
        response
        async for response in gateway.stub.Chat(chat(text, route), metadata=metadata, timeout=10)
    ]
    text = "".join(response.delta.text for response in responses)
    return text, responses[0], responses[-1]


def prompts(upstream: FakeUpstream) -> list[str]:
    return [seen.json()["messages"][0]["content"] for seen in upstream.requests]


async def test_a_weighted_route_splits_calls_by_weight() -> None:
    async with (
        FakeUpstream(answer("from a")) as a,
        FakeUpstream(answer("from b")) as b,
        running_gateway(
            {
                "routes": [
                    {
                        "name": "r",
                        "route_type": "llm/v1/chat",
                        "strategy": "weighted",
                        "targets": [
                            {"model": model(a), "weight": 3},
                            {"model": model(b), "weight": 1},
                        ],
                    }
                ]
            }
        ) as gateway,
    ):
        answers = await asyncio.gather(*(ask(gateway, f"call {i}") for i in range(400)))

    assert Counter(text for text, _, _ in answers).keys() == {"from a", "from b"}
    assert len(a.requests) + len(b.requests) == 400
    # 300 expected; 45 is more than five standard deviations of a fair draw.
    assert abs(len(a.requests) - 300) <= 45


async def test_a_sticky_weighted_route_keeps_each_user_on_one_target() -> None:
    async with (
        FakeUpstream(answer("from a")) as a,
        FakeUpstream(answer("from b")) as b,
        running_gateway(
            {
                "routes": [
                    {
                        "name": "r",
                        "route_type": "llm/v1/chat",
                        "strategy": "weighted",
                        "sticky": {"metadata": "x-user"},
                        "targets": [
                            {"model": model(a), "weight": 1},
                            {"model": model(b), "weight": 1},
                        ],
                    }
                ]
            }
        ) as gateway,
    ):
        await asyncio.gather(
            *(
                ask(gateway, f"user-{user}", metadata=[("x-user", f"user-{user}")])
                for user in range(200)
                for _ in range(3)
            )
        )

    users_of_a, users_of_b = Counter(prompts(a)), Counter(prompts(b))
    assert not users_of_a.keys() & users_of_b.keys()
    assert set(users_of_a.values()) == set(users_of_b.values()) == {3}
    assert 70 <= len(users_of_a) <= 130


PII_ROUTE = {
    "name": "r",
    "route_type": "llm/v1/chat",
    "strategy": "rules",
    "rules": [{"when": {"matches": SSN}, "target": 1}],
}


async def test_pii_prompts_go_to_the_local_model_and_the_rest_to_the_cloud() -> None:
    async with (
        FakeUpstream(answer("cloud")) as cloud,
        FakeUpstream(answer("local")) as local,
        running_gateway(
            {
                "routes": [
                    {**PII_ROUTE, "targets": [{"model": model(cloud)}, {"model": model(local)}]}
                ]
            }
        ) as gateway,
    ):
        pii, _, _ = await ask(gateway, "my SSN is 123-45-6789")
        plain, _, _ = await ask(gateway, "what is an SSN?")

    assert (pii, plain) == ("local", "cloud")
    assert prompts(local) == ["my SSN is 123-45-6789"]
    assert prompts(cloud) == ["what is an SSN?"]


async def test_a_pii_prompt_never_falls_back_to_the_cloud() -> None:
    down = Reply.json(500, {"error": {"message": "down", "type": "server_error"}})
    async with (
        FakeUpstream(answer("cloud")) as cloud,
        FakeUpstream(down) as local,
        running_gateway(
            {
                "routes": [
                    {**PII_ROUTE, "targets": [{"model": model(cloud)}, {"model": model(local)}]}
                ]
            }
        ) as gateway,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ask(gateway, "my SSN is 123-45-6789")

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(local.requests) == 1
    assert cloud.requests == []


async def test_a_tenant_rule_sends_the_call_to_its_route() -> None:
    async with (
        FakeUpstream(answer("shared")) as shared,
        FakeUpstream(answer("acme")) as acme,
        running_gateway(
            {
                "routes": [
                    {
                        "name": "r",
                        "route_type": "llm/v1/chat",
                        "model": model(shared),
                        "rules": [{"when": {"metadata": {"x-tenant": "acme"}}, "route": "acme"}],
                    },
                    {
                        "name": "acme",
                        "route_type": "llm/v1/chat",
                        "model": model(acme, "acme-model"),
                        "config": {"max_tokens": 7},
                    },
                ]
            }
        ) as gateway,
    ):
        tenant, tenant_start, _ = await ask(gateway, "hi", metadata=[("x-tenant", "acme")])
        other, other_start, _ = await ask(gateway, "hi", metadata=[("x-tenant", "globex")])

    assert (tenant, tenant_start.start.route) == ("acme", "acme")
    assert (other, other_start.start.route) == ("shared", "r")
    (seen,) = acme.requests
    assert (seen.json()["model"], seen.json()["max_completion_tokens"]) == ("acme-model", 7)
    assert "max_completion_tokens" not in shared.requests[0].json()


async def test_shadow_traffic_reaches_the_mirror_and_the_caller_never_waits() -> None:
    slow_mirror = answer("mirror")
    slow_mirror.head_delay = 1.0
    async with (
        FakeUpstream(answer("main")) as main,
        FakeUpstream(slow_mirror) as mirror,
    ):
        async with running_gateway(
            {
                "routes": [
                    {
                        "name": "r",
                        "route_type": "llm/v1/chat",
                        "model": model(main),
                        "shadow": {"target": {"model": model(mirror, "candidate")}, "sample": 1.0},
                    }
                ]
            }
        ) as gateway:
            started = time.monotonic()
            text, start, finish = await ask(gateway, "compare us")
            took = time.monotonic() - started
            async with asyncio.timeout(5):
                await mirror.request_seen.wait()
            # The caller's stream completed before the mirror even answered.
            assert mirror.chunks_sent == 0
            # In flight at shutdown: the mirror is cancelled with the gateway.
        async with asyncio.timeout(5):
            await mirror.connections[0].closed_event.wait()

    assert (text, start.start.model, start.start.provider) == ("main", "m", "openai")
    assert [a.target for a in finish.finish.attempts] == ["openai/m"]
    assert took < 0.5
    assert prompts(main) == prompts(mirror) == ["compare us"]
    assert mirror.requests[0].json()["model"] == "candidate"
