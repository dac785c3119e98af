"""Shared state through real servers and a real Redis: the cache replays a
stream chunk by chunk, replicas share entries and counters, limits are exact
across two `sluice serve` processes (on one Redis and on a Redis Cluster),
budgets refuse, and a Redis outage or a cluster failover follows each
route's failure policy and heals by itself."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sluice.auth import hash_key
from sluice.state.redis_scripts import state_key
from sluice_client.v1 import gateway_pb2 as pb
from sluice_client.v1 import gateway_pb2_grpc
from tests.gateway import RunningGateway, route, running_gateway
from tests.recordings import recording
from tests.redis_cluster import RedisClusterNodes
from tests.redis_server import RedisServer
from tests.upstream import FakeUpstream, Reply

KEY = "sk-sluice-shared-state-test"


def chat(route_name: str, temperature: float = 0.0) -> pb.ChatRequest:
    request = pb.ChatRequest(
        route=route_name,
        messages=[pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text="hi")])],
    )
    request.generation.temperature = temperature
    return request


async def collect(
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub, request: pb.ChatRequest, key: str = ""
) -> list[pb.ChatResponse]:
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    return [r async for r in stub.Chat(request, timeout=10, metadata=metadata)]


def state(redis: RedisServer | None) -> dict[str, Any]:
    return {"backend": "redis", "url": redis.url} if redis else {"backend": "memory"}


def quota_subject(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            return str(failure.violations[0].subject)
    raise AssertionError("no QuotaFailure detail")


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[RedisServer | None]:
    if request.param == "memory":
        yield None
    else:
        yield request.getfixturevalue("redis_server")


async def test_a_cache_hit_replays_the_stream(
    backend: RedisServer | None,
) -> None:
    body = recording("openai_chat_stream.txt")
    async with FakeUpstream(Reply(chunks=[body])) as upstream:
        config = {
            "state": state(backend),
            "routes": [
                route("gpt", provider="openai", name="m", api_base=upstream.base_url)
                | {"cache": {"ttl": 60}}
            ],
        }
        async with running_gateway(config) as gateway:
            first = await collect(gateway.stub, chat("gpt"))
            second = await collect(gateway.stub, chat("gpt"))
            sampled = await collect(gateway.stub, chat("gpt", temperature=0.7))
    assert len(upstream.requests) == 2, "the hit made no upstream call; the sampled call did"
    assert not first[0].start.cache_hit
    assert second[0].start.cache_hit
    assert not sampled[0].start.cache_hit
    first[0].start.cache_hit = True
    # A replay is a call of its own: its own call id, never the stored one's.
    assert second[0].start.call_id not in ("", first[0].start.call_id)
    first[0].start.call_id = second[0].start.call_id
    del first[-1].finish.attempts[:]  # a replay made no upstream attempt
    # The same answer; its deltas, all waiting, leave coalesced.
    assert [r.WhichOneof("event") for r in second] == ["start", "delta", "usage", "finish"]
    assert (second[0], second[-2], second[-1]) == (first[0], first[-2], first[-1])
    assert second[1].delta.text == "".join(r.delta.text for r in first[1:-2])


async def test_a_second_replica_sees_the_first_ones_cache_and_counters(
    redis_server: RedisServer,
) -> None:
    body = recording("openai_chat_stream.txt")
    async with FakeUpstream(Reply(chunks=[body])) as upstream:
        config = {
            "state": state(redis_server),
            "routes": [
                route("gpt", provider="openai", name="m", api_base=upstream.base_url)
                | {"cache": {"ttl": 60}, "limits": {"requests": "3/minute"}}
            ],
        }
        async with running_gateway(config) as one, running_gateway(config) as two:
            assert not (await collect(one.stub, chat("gpt")))[0].start.cache_hit
            assert (await collect(two.stub, chat("gpt")))[0].start.cache_hit
            await collect(one.stub, chat("gpt"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await collect(two.stub, chat("gpt"))
    assert len(upstream.requests) == 1
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert quota_subject(refused.value) == "route:gpt/requests"


@contextlib.contextmanager
def sluice_processes(config: dict[str, Any], directory: Path, count: int) -> Iterator[list[str]]:
    """`count` real `sluice serve` processes on one config; their targets."""
    path = directory / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    sluice = str(Path(sys.executable).parent / "sluice")
    targets, processes = [], []
    with contextlib.ExitStack() as logs:
        try:
            for i in range(count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
                log = logs.enter_context((directory / f"sluice-{i}.log").open("wb"))
                processes.append(
                    subprocess.Popen(
                        [sluice, "serve", "--config", str(path), "--port", str(port)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
                targets.append(f"127.0.0.1:{port}")
            yield targets
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    assert process.wait(timeout=10) == 0
                except subprocess.TimeoutExpired:
                    process.kill()
                    raise


def shared_state(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The `state:` of a fresh Redis, or of the session's Redis Cluster under
    a prefix of this test's own."""
    if backend == "redis":
        return state(request.getfixturevalue("redis_server"))
    cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
    # A timeout that a loaded machine cannot exceed: a call that timed out would pass unlimited.
    return {
        "backend": backend,
        "url": cluster.url,
        "timeout": 2,
        "key_prefix": f"test-{uuid.uuid4().hex}:",
    }


@pytest.mark.parametrize("backend", ["redis", "redis_cluster"])
async def test_a_limit_is_exact_across_two_server_processes(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    limit, attempts = 20, 60
    config = {
        "state": shared_state(backend, request),
        # A key limit too: each call is admitted in two scopes (on a cluster,
        # two slots), and the route's limit stays exact.
        "auth": {
            "keys": [{"name": "team", "sha256": hash_key(KEY), "limits": {"requests": "1000/hour"}}]
        },
        "routes": [
            route("chat", provider="mock", reply="ok") | {"limits": {"requests": f"{limit}/hour"}}
        ],
    }
    with sluice_processes(config, tmp_path, 2) as targets:
        channels = [grpc.aio.insecure_channel(target) for target in targets]
        try:
            for channel in channels:
                await asyncio.wait_for(channel.channel_ready(), 15)
            stubs = [gateway_pb2_grpc.GatewayServiceStub(channel) for channel in channels]
            # One call each first, so that neither races while still connecting to its backend.
            for stub in stubs:
                await collect(stub, chat("chat"), KEY)

            async def attempt(i: int) -> grpc.StatusCode:
                try:
                    await collect(stubs[i % 2], chat("chat"), KEY)
                except grpc.aio.AioRpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

            codes = await asyncio.gather(*(attempt(i) for i in range(attempts)))
        finally:
            for channel in channels:
                await channel.close()
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.OK) == limit - len(targets)
    assert grpc.StatusCode.OK in codes[0::2], "both processes served calls"
    assert grpc.StatusCode.OK in codes[1::2], "both processes served calls"


async def test_a_budget_refuses_once_spent(backend: RedisServer | None) -> None:
    config = {
        "state": state(backend),
        "prices": {"mock/mock": {"input": 1_000_000.0, "output": 1_000_000.0}},
        "auth": {
            "keys": [
                {"name": "team", "sha256": hash_key(KEY), "budget": {"usd": 5, "period": "day"}}
            ]
        },
        "routes": [route("chat", provider="mock", reply="one two")],
    }
    async with running_gateway(config) as gateway:
        # Each call costs (1 input + 2 output tokens) x $1 = $3: the second crosses $5.
        await collect(gateway.stub, chat("chat"), KEY)
        await collect(gateway.stub, chat("chat"), KEY)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await collect(gateway.stub, chat("chat"), KEY)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert quota_subject(refused.value) == "key:team/budget"


@contextlib.asynccontextmanager
async def policies(redis: RedisServer, upstream: FakeUpstream) -> AsyncIterator[RunningGateway]:
    openai = {"provider": "openai", "name": "m", "api_base": upstream.base_url}
    config = {
        "state": {**state(redis), "timeout": 0.2},
        "routes": [
            route("open", **openai)
            | {
                "limits": {"requests": "2/hour"},
                "cache": {"ttl": 60, "failure_policy": "fail_open"},
            },
            route("closed", **openai)
            | {"limits": {"requests": "100/hour", "failure_policy": "fail_closed"}},
        ],
    }
    async with running_gateway(config) as gateway:
        yield gateway


async def test_a_redis_outage_follows_each_routes_policy_and_heals(
    redis_server: RedisServer,
) -> None:
    body = recording("openai_chat_stream.txt")
    async with (
        FakeUpstream(Reply(chunks=[body])) as upstream,
        policies(redis_server, upstream) as gw,
    ):
        await collect(gw.stub, chat("open"))
        await collect(gw.stub, chat("open"))
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await collect(gw.stub, chat("open"))
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        redis_server.stop()
        # fail_open: limits and cache step aside; the answer comes from upstream, promptly.
        before = len(upstream.requests)
        answered = await asyncio.wait_for(collect(gw.stub, chat("open")), 5)
        assert answered[-1].finish.reason == pb.FINISH_REASON_STOP
        assert not answered[0].start.cache_hit
        assert len(upstream.requests) == before + 1
        # fail_closed: refused as unavailable, never hanging.
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            await asyncio.wait_for(collect(gw.stub, chat("closed")), 5)
        assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "STATE_UNAVAILABLE" in str(rpc_status.from_call(closed.value))

        redis_server.start()
        # Back by itself: limits count again (Redis came back empty).
        assert (await collect(gw.stub, chat("closed")))[-1].HasField("finish")
        await collect(gw.stub, chat("open"))
        await collect(gw.stub, chat("open"))
        with pytest.raises(grpc.aio.AioRpcError) as limited_again:
            await collect(gw.stub, chat("open"))
        assert limited_again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_with_redis_frozen_a_fail_open_call_waits_one_state_timeout_in_all(
    redis_server: RedisServer,
) -> None:
    """The cache lookup and the admission share one `state.timeout`: a hung
    Redis (accepting, never answering) costs a call it once, not twice."""
    timeout = 0.5
    body = recording("openai_chat_stream.txt")
    async with FakeUpstream(Reply(chunks=[body])) as upstream:
        openai = {"provider": "openai", "name": "m", "api_base": upstream.base_url}
        config = {
            "state": {**state(redis_server), "timeout": timeout},
            "routes": [
                route("open", **openai) | {"limits": {"requests": "100/hour"}, "cache": {"ttl": 60}}
            ],
        }
        async with running_gateway(config) as gw:
            await collect(gw.stub, chat("open", temperature=0.5))  # Redis answers: pooled
            redis_server.pause()
            try:
                started = time.monotonic()
                answered = await collect(gw.stub, chat("open"))
                waited = time.monotonic() - started
            finally:
                redis_server.resume()
    assert answered[-1].finish.reason == pb.FINISH_REASON_STOP
    # Both stages on one deadline: about 0.5 s (twice that before).
    assert timeout <= waited < timeout * 1.6


def route_name_on(cluster: RedisClusterNodes, prefix: str, master: RedisServer, stem: str) -> str:
    """A route name whose limits live on `master`."""
    return next(
        name
        for name in (f"{stem}-{i}" for i in range(10_000))
        if cluster.master_of(state_key(prefix, "rate", f"route:{name}/requests")) is master
    )


async def test_a_cluster_failover_follows_each_routes_policy_and_heals(
    redis_cluster: RedisClusterNodes, tmp_path: Path
) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    closed = "closed"
    closed_key = state_key(prefix, "rate", f"route:{closed}/requests")
    # Both routes' limits on the master the test kills.
    opened = route_name_on(redis_cluster, prefix, redis_cluster.master_of(closed_key), "open")
    config = {
        "state": {
            "backend": "redis_cluster",
            "url": redis_cluster.url,
            "timeout": 0.5,
            "key_prefix": prefix,
        },
        "routes": [
            route(opened, provider="mock", reply="ok") | {"limits": {"requests": "1000/hour"}},
            route(closed, provider="mock", reply="ok")
            | {"limits": {"requests": "1000/hour", "failure_policy": "fail_closed"}},
        ],
    }
    # A `sluice serve` process: redis-py leaves a connection to the failed
    # master unclosed, which in this process would warn during a later test.
    with sluice_processes(config, tmp_path, 1) as [target]:
        async with grpc.aio.insecure_channel(target) as channel:
            await asyncio.wait_for(channel.channel_ready(), 15)
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            await collect(stub, chat(opened))
            await collect(stub, chat(closed))

            killed = redis_cluster.kill_master_of(closed_key)
            # Until its replica takes over: fail_open passes, fail_closed refuses, both promptly.
            started = time.monotonic()
            answered = await asyncio.wait_for(collect(stub, chat(opened)), 5)
            assert answered[-1].finish.reason == pb.FINISH_REASON_STOP
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await asyncio.wait_for(collect(stub, chat(closed)), 5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "STATE_UNAVAILABLE" in str(rpc_status.from_call(refused.value))
            assert time.monotonic() - started < 3, "a failover costs a call at most its timeout"

            # The replica is promoted (cluster-node-timeout 1 s): fail_closed serves again.
            deadline = time.monotonic() + 15
            while True:
                assert (await collect(stub, chat(opened)))[-1].HasField("finish")
                try:
                    await collect(stub, chat(closed))
                    break
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                assert code == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline, "no recovery after the failover"
                await asyncio.sleep(0.1)
    assert redis_cluster.master_of(closed_key) is not killed, "served by the promoted replica"
