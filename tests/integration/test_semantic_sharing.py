"""The semantic cache shared across replicas on one real Redis, or one real
Redis Cluster: real `sluice serve` processes, the chat and embeddings
upstreams of test_semantic_cache.py on loopback. An answer one replica
stored is a semantic hit on another within a second; a replica started
afresh rebuilds its index from Redis; on a cluster, a replica whose node
dies follows on another; the shared set and each index keep `max_entries`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from sluice.config.schema import StateConfig
from sluice_client.v1 import gateway_pb2_grpc
from tests.integration.test_semantic_cache import (
    FAR,
    PARAPHRASE,
    QUESTION,
    THRESHOLD,
    Answer,
    ask,
    cosine,
    embeddings,
    numbered_answers,
    semantic_config,
)
from tests.integration.test_shared_state import shared_state, sluice_processes, state
from tests.redis_cluster import RedisClusterNodes
from tests.redis_server import RedisServer
from tests.upstream import FakeUpstream

# Polls ask with no-store: a miss must not store an answer of its own.
_PEEK = "no-store"


@dataclass
class Replica:
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub


@contextlib.asynccontextmanager
async def replicas(
    config: dict[str, Any], directory: Path, count: int
) -> AsyncIterator[list[Replica]]:
    with sluice_processes(config, directory, count) as targets:
        channels = [grpc.aio.insecure_channel(target) for target in targets]
        try:
            for channel in channels:
                await asyncio.wait_for(channel.channel_ready(), 15)
            yield [Replica(gateway_pb2_grpc.GatewayServiceStub(channel)) for channel in channels]
        finally:
            for channel in channels:
                await channel.close()


async def hit_within(replica: Replica, question: str, seconds: float) -> Answer:
    """The first semantic hit for `question` within `seconds`, else the last miss."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        answer = await ask(replica, question, header=_PEEK)
        if answer.hit or asyncio.get_running_loop().time() > deadline:
            return answer
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def upstreams() -> AsyncIterator[tuple[FakeUpstream, FakeUpstream]]:
    async with FakeUpstream(numbered_answers()) as chat, FakeUpstream(embeddings) as embedder:
        yield chat, embedder


def shared(
    shared_state: dict[str, Any], chat: FakeUpstream, embedder: FakeUpstream, **semantic: Any
) -> dict[str, Any]:
    return semantic_config(chat, embedder, semantic) | {"state": shared_state}


@pytest.mark.parametrize("backend", ["redis", "redis_cluster"])
async def test_an_answer_stored_by_one_replica_hits_on_another_and_after_a_restart(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with upstreams() as (chat, embedder):
        config = shared(shared_state(backend, request), chat, embedder)
        async with replicas(config, tmp_path, 2) as (one, two):
            stored = await ask(one, QUESTION)
            started = asyncio.get_running_loop().time()
            hit = await hit_within(two, PARAPHRASE, 1.0)
            assert asyncio.get_running_loop().time() - started < 1.0
            assert (hit.hit, hit.word) == (True, stored.word)
            assert hit.similarity is not None
            assert hit.similarity < 1.0
        # A replica started afresh reads the entries from Redis.
        async with replicas(config, tmp_path, 1) as (fresh,):
            again = await hit_within(fresh, PARAPHRASE, 1.0)
            assert (again.hit, again.word) == (True, stored.word)
        assert len(chat.requests) == 1


async def until(settled: Callable[[], bool], seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not settled():
        assert asyncio.get_running_loop().time() < deadline, "not settled in time"
        await asyncio.sleep(0.05)


async def test_replicas_whose_cluster_node_dies_follow_on_another(
    redis_cluster: RedisClusterNodes, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    state = shared_state("redis_cluster", request)
    channel = f"{state['key_prefix']}semantic"
    async with (
        upstreams() as (chat, embedder),
        replicas(shared(state, chat, embedder), tmp_path, 2) as (one, two),
    ):
        await until(lambda: sum(redis_cluster.subscribers(channel).values()) == 2, 5.0)
        followed = list(redis_cluster.subscribers(channel))
        for node in followed:
            redis_cluster.kill(node)
        # The killed node's slots failed over, and both replicas follow
        # again, on nodes still up.
        await until(redis_cluster.is_serving, 15.0)
        await until(lambda: sum(redis_cluster.subscribers(channel).values()) == 2, 10.0)
        # A replica's cluster client learns the new slot owners at its
        # first failed write: an entry stored then is not shared (the
        # call still succeeds). Each try asks a question far from every
        # earlier one, so that it is a miss on `one` and stores anew.
        deadline = asyncio.get_running_loop().time() + 10.0
        for attempt in range(1000):
            question = " ".join(f"word{attempt}n{index}" for index in range(6))
            paraphrase = f"{question} please"
            assert cosine(question, paraphrase) >= THRESHOLD
            stored = await ask(one, question)
            assert not stored.hit
            hit = await hit_within(two, paraphrase, 1.0)
            if hit.hit or asyncio.get_running_loop().time() > deadline:
                break
        assert (hit.hit, hit.word) == (True, stored.word)


async def test_the_shared_set_and_each_index_keep_max_entries(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with upstreams() as (chat, embedder):
        config = shared(state(redis_server), chat, embedder, max_entries=1)
        async with replicas(config, tmp_path, 2) as (one, two):
            await ask(one, QUESTION)
            await ask(one, FAR)
            # The follower learned both, and keeps the newest.
            assert (await hit_within(two, f"{FAR} please", 1.0)).hit
            assert not (await ask(two, PARAPHRASE, header=_PEEK)).hit
        redis = Redis.from_url(redis_server.url)
        try:
            prefix = StateConfig().key_prefix
            assert await redis.zcard(f"{prefix}{{semantic:chat}}entries") == 1
            assert len(await redis.keys(f"{prefix}{{semantic:chat}}entry:*")) == 1
        finally:
            await redis.aclose()
        async with replicas(config, tmp_path, 1) as (fresh,):
            assert (await hit_within(fresh, f"{FAR} please", 1.0)).hit
            assert not (await ask(fresh, PARAPHRASE, header=_PEEK)).hit
        # The two stored, and each evicted question's miss.
        assert len(chat.requests) == 4
