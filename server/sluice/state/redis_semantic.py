"""The semantic cache's shared log in Redis (`SemanticEntryStore`).

Per route, under the hash tag `{semantic:<route>}`: each entry's stored
form (semantic_entries.py) at `...entry:<exact key>`, expiring with its
answer's ttl, and a sorted set of the exact keys by time stored, trimmed to
the route's newest `max_entries` (the trimmed entries deleted with it) and
expiring with its newest entry. One script stores, trims and publishes the
entry on the channel `<key_prefix>semantic`, which every replica follows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from sluice.semantic_index import SemanticEntry
from sluice.state.base import StateWait
from sluice.state.redis_calls import answer_within
from sluice.state.semantic_entries import decode_entry, encode_entry

logger = logging.getLogger(__name__)

# KEYS: the entry, the route's sorted set. ARGV: the entry's stored form,
# its ttl in ms, the time, its exact key, max_entries, the entry key's
# prefix (for the trimmed), the channel.
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


class RedisSemanticEntries:
    def __init__(self, client: Redis, prefix: str, timeout: float) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout = timeout
        self._channel = f"{prefix}semantic"
        self._share = client.register_script(_SHARE)

    def _keys(self, route: str) -> tuple[str, str]:
        """The prefix of `route`'s entry keys, and its sorted set's key."""
        tag = f"{self._prefix}{{semantic:{route}}}"
        return f"{tag}entry:", f"{tag}entries"

    async def share(
        self, entry: SemanticEntry, ttl: float, max_entries: int, *, within: StateWait | None = None
    ) -> None:
        entries, by_time = self._keys(entry.route)
        args: list[bytes | str | int | float] = [
            encode_entry(entry),
            max(1, round(ttl * 1000)),
            time.time(),
            entry.key,
            max_entries,
            entries,
            self._channel,
        ]
        seconds = self._timeout if within is None else within.left(self._timeout)
        await answer_within(seconds, self._share(keys=[entries + entry.key, by_time], args=args))

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
        async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
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
