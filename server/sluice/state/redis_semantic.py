"""The semantic cache's shared log in Redis (`SemanticEntryStore`).

Per route, under the hash tag `{semantic:<route>}`: each entry's stored
form (semantic_entries.py) at `...entry:<exact key>`, expiring with its
answer's ttl, and a sorted set of the exact keys by time stored, trimmed to
the route's newest `max_entries` (the trimmed entries deleted with it) and
expiring with its newest entry. One script stores, trims and publishes the
entry on the channel `<key_prefix>semantic`, which every replica follows.

A single Redis and a Redis Cluster differ only in what the backend injects:
how a script is run (a cluster routes it by its keys, all of one route's in
one slot) and the connection a follower subscribes on (a cluster client has
no pub/sub: a plain connection to one of its nodes, redis_cluster.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

from sluice.semantic_index import SemanticEntry
from sluice.state.base import StateWait
from sluice.state.redis_calls import answer_within
from sluice.state.redis_scripts import Args
from sluice.state.semantic_entries import decode_entry, encode_entry

logger = logging.getLogger(__name__)

# KEYS: the entry, the route's sorted set. ARGV: the entry's stored form,
# its ttl in ms, the time, its exact key, max_entries, the entry key's
# prefix (for the trimmed), the channel. The trimmed entries' keys, unknown
# beforehand, are derived here: they share the route's slot, which a cluster
# lets a script touch.
_SHARE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  for _, key in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    redis.call('DEL', ARGV[6] .. key)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
redis.call('PUBLISH', ARGV[7], ARGV[1])
"""
# How long a follower waits for a message before looking again: the
# client's socket timeout would otherwise end an idle wait as a failure.
_POLL_SECONDS = 1.0

# Runs a script on these keys with these arguments; its answer.
Evaluate = Callable[[AsyncScript, list[str], Args], Awaitable[Any]]
# A connection to subscribe on, closed (if the backend's own) at exit; any
# failure to reach it is StateUnavailableError.
Subscriber = Callable[[], AbstractAsyncContextManager[Redis]]


class RedisSemanticEntries:
    def __init__(
        self,
        client: Redis | RedisCluster,
        prefix: str,
        timeout: float,
        evaluate: Evaluate,
        subscriber: Subscriber,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout = timeout
        self._evaluate = evaluate
        self._subscriber = subscriber
        self._channel = f"{prefix}semantic"
        # Typed for Redis alone; a cluster's runs as EVALSHA routed by keys.
        self._share = client.register_script(_SHARE)  # type: ignore[misc]

    def _keys(self, route: str) -> tuple[str, str]:
        """The prefix of `route`'s entry keys, and its sorted set's key."""
        tag = f"{self._prefix}{{semantic:{route}}}"
        return f"{tag}entry:", f"{tag}entries"

    async def share(
        self, entry: SemanticEntry, ttl: float, max_entries: int, *, within: StateWait | None = None
    ) -> None:
        entries, by_time = self._keys(entry.route)
        args: Args = [
            encode_entry(entry),
            max(1, round(ttl * 1000)),
            time.time(),
            entry.key,
            max_entries,
            entries,
            self._channel,
        ]
        seconds = self._timeout if within is None else within.left(self._timeout)
        keys = [entries + entry.key, by_time]
        await answer_within(seconds, self._evaluate(self._share, keys, args))

    async def entries(self, route: str, max_entries: int) -> list[SemanticEntry]:
        prefix, by_time = self._keys(route)

        async def read() -> list[bytes | None]:
            keys = await self._client.zrange(by_time, -max_entries, -1)
            return await self._client.mget([prefix + key.decode() for key in keys]) if keys else []

        stored = await answer_within(self._timeout, read())
        return [entry for data in stored if data and (entry := _readable(data)) is not None]

    async def follow(
        self, learn: Callable[[SemanticEntry], None], ready: Callable[[], Awaitable[None]]
    ) -> None:
        async with (
            self._subscriber() as node,
            node.pubsub(ignore_subscribe_messages=True) as pubsub,
        ):
            await answer_within(self._timeout, pubsub.subscribe(self._channel))
            await ready()
            while True:
                message = await answer_within(
                    _POLL_SECONDS + self._timeout, pubsub.get_message(timeout=_POLL_SECONDS)
                )
                if message is not None and (entry := _readable(message["data"])) is not None:
                    learn(entry)
                await asyncio.sleep(0)  # a busy channel still lets the loop run


def _readable(data: bytes) -> SemanticEntry | None:
    try:
        return decode_entry(data)
    except ValueError:
        logger.warning("semantic cache: an unreadable shared entry ignored")
        return None
