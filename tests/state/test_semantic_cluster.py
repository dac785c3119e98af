"""The semantic cache's shared log on a real Redis Cluster (three masters, a
replica each): a classic PUBLISH reaches a subscriber on every node, so a
replica following the log on one node learns entries stored on another
node's slots; and when its connection is lost, it follows again on another
node and reads the log again, so what was stored meanwhile is learned too;
a route's log keeps its newest `max_entries`.
(A node killed outright is test_semantic_sharing.py's, on `sluice serve`
processes: redis-py's cluster client leaves sockets unclosed after a
failover, which this process's tests would count as errors.)"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import numpy as np
from redis.asyncio import Redis, RedisCluster

from sluice.config.schema import StateConfig
from sluice.semantic_index import SemanticEntry, SemanticIndex
from sluice.semantic_sharing import SemanticSharing
from sluice.state.redis_cluster import RedisClusterState
from tests.redis_cluster import RedisClusterNodes
from tests.redis_server import RedisServer

# A cluster client's first call learns the slot map within its timeout.
TIMEOUT = 2.0
PARTITION = "p"
# Within a second by pub/sub; a follower that lost its connection follows
# again after a second.
LEARNED_SECONDS = 1.0
REFOLLOWED_SECONDS = 5.0


def entry(route: str, key: str, axis: int) -> SemanticEntry:
    vector = np.zeros(8, dtype=np.float32)
    vector[axis] = 1.0
    return SemanticEntry(route, PARTITION, key, vector)


async def learned(index: SemanticIndex, stored: SemanticEntry, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        match = index.nearest(PARTITION, stored.vector)
        if match is not None and match.key == stored.key:
            return True
        await asyncio.sleep(0.02)
    return False


async def subscribed_node(cluster: RedisClusterNodes, channel: str) -> RedisServer:
    """The one node with a subscriber on `channel`, once there is one."""
    for _ in range(250):
        nodes = list(cluster.subscribers(channel))
        if nodes:
            [node] = nodes
            return node
        await asyncio.sleep(0.02)
    raise AssertionError(f"no node has a subscriber on {channel}")


@contextlib.asynccontextmanager
async def cluster_state(
    cluster: RedisClusterNodes, prefix: str
) -> AsyncIterator[RedisClusterState]:
    config = StateConfig(
        backend="redis_cluster", url=cluster.url, timeout=TIMEOUT, key_prefix=prefix
    )
    state = RedisClusterState(config)
    try:
        yield state
    finally:
        await state.aclose()


async def test_a_classic_publish_reaches_a_subscriber_on_every_node(
    redis_cluster: RedisClusterNodes,
) -> None:
    channel = f"test-{uuid.uuid4().hex}:semantic"
    async with contextlib.AsyncExitStack() as stack:
        pubsubs = []
        for node in redis_cluster.nodes:
            client = await stack.enter_async_context(Redis(port=node.port, socket_timeout=2))
            pubsub = await stack.enter_async_context(client.pubsub(ignore_subscribe_messages=True))
            await pubsub.subscribe(channel)
            pubsubs.append(pubsub)
        # Published on one node: every other node relays it.
        await client.publish(channel, b"stored")
        for pubsub in pubsubs:
            message = None
            for _ in range(20):
                message = await pubsub.get_message(timeout=0.1)
                if message is not None:
                    break
            assert message is not None
            assert message["data"] == b"stored"


async def test_a_follower_learns_across_nodes_and_follows_again_when_its_connection_is_lost(
    redis_cluster: RedisClusterNodes,
) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    channel = f"{prefix}semantic"
    routes = [f"route-{i}" for i in range(16)]
    indexes = {route: SemanticIndex(10) for route in routes}
    async with (
        cluster_state(redis_cluster, prefix) as writer,
        cluster_state(redis_cluster, prefix) as reader,
    ):
        sharing = SemanticSharing(reader.semantic)
        sharing.follow(indexes)
        try:
            node = await subscribed_node(redis_cluster, channel)
            # A route whose entries live on another master than the one the
            # reader follows on: its announcements cross the cluster bus.
            route = next(
                route
                for route in routes
                if redis_cluster.master_of(f"{prefix}{{semantic:{route}}}entries") is not node
            )
            first = entry(route, "first", 0)
            await writer.semantic.share(first, 60, 10)
            assert await learned(indexes[route], first, LEARNED_SECONDS)

            async with Redis(port=node.port, socket_timeout=2) as client:
                assert await client.client_kill_filter(_type="pubsub") == 1
            # Stored while the reader follows nowhere: learned by reading the log again.
            meanwhile = entry(route, "meanwhile", 1)
            await writer.semantic.share(meanwhile, 60, 10)
            assert await learned(indexes[route], meanwhile, REFOLLOWED_SECONDS)

            assert await subscribed_node(redis_cluster, channel) is not node
            after = entry(route, "after", 2)
            await writer.semantic.share(after, 60, 10)
            assert await learned(indexes[route], after, LEARNED_SECONDS)
        finally:
            await sharing.aclose()


async def test_a_routes_log_keeps_its_newest_max_entries_on_a_cluster(
    redis_cluster: RedisClusterNodes,
) -> None:
    # The script trims keys it derives (the entries it drops): in the
    # route's slot, which a cluster lets it touch.
    prefix = f"test-{uuid.uuid4().hex}:"
    async with cluster_state(redis_cluster, prefix) as state:
        for axis, key in enumerate(("old", "new")):
            await state.semantic.share(entry("chat", key, axis), 60, 1)
        assert [kept.key for kept in await state.semantic.entries("chat", 10)] == ["new"]
    async with RedisCluster.from_url(redis_cluster.url) as cluster:
        tag = f"{prefix}{{semantic:chat}}"
        assert await cluster.exists(f"{tag}entry:old", f"{tag}entry:new") == 1
