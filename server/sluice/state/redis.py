"""Shared state in Redis: exact across every replica that shares the server.

Admission is one Lua script and settlement another (one round trip each),
so each is atomic however many replicas race; the scripts and the key
layout are `redis_scripts`'. Every key starts with `key_prefix`.

The response cache is aiocache's Redis backend on the same connection pool.
Entries expire by ttl; `max_entries` is not enforced (Redis's own `maxmemory`
policy is the bound there).

An operation waits at most `timeout` seconds (connecting, sending and
reading: one deadline over all of it), or what is left of a `StateWait` it
shares with the call's other operations, and is never retried; any failure is
`StateUnavailableError`, and since each call takes a connection afresh from
the pool, calls succeed again as soon as Redis is back.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from aiocache import RedisCache
from aiocache.serializers import NullSerializer
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from sluice.config.schema import StateConfig
from sluice.state.base import (
    Addition,
    Admission,
    BudgetLimit,
    Charge,
    ConcurrencyLimit,
    Lease,
    RateLimit,
    ResponseCacheStore,
    SemanticEntryStore,
    StateWait,
)
from sluice.state.experiments import ExperimentStore, RedisExperiments
from sluice.state.redis_calls import answer_within
from sluice.state.redis_scripts import (
    ADMIT,
    SETTLE,
    Args,
    admission_of,
    admit_arguments,
    settle_arguments,
)
from sluice.state.redis_semantic import RedisSemanticEntries

_T = TypeVar("_T")


def _seconds(timeout: float, within: StateWait | None) -> float:
    return timeout if within is None else within.left(timeout)


class _RedisCacheStore:
    def __init__(self, cache: Any, timeout: float) -> None:
        self._cache = cache
        self._timeout = timeout

    async def get(self, key: str, *, within: StateWait | None = None) -> bytes | None:
        value = await answer_within(_seconds(self._timeout, within), self._cache.get(key))
        return value if isinstance(value, bytes) else None

    async def set(
        self, key: str, value: bytes, ttl: float, *, within: StateWait | None = None
    ) -> None:
        # A float ttl makes aiocache store with millisecond precision (PSETEX).
        operation = self._cache.set(key, value, ttl=float(ttl))
        await answer_within(_seconds(self._timeout, within), operation)


class RedisState:
    """`SharedState` on one Redis server, through one connection pool."""

    def __init__(self, config: StateConfig) -> None:
        if config.url is None:
            raise ValueError(f"state backend {config.backend} needs a url")
        self._prefix = config.key_prefix
        self._timeout = config.timeout
        try:
            self._client = self._connect(config.url.get_secret_value(), config.timeout)
        except ValueError:
            # Its message could quote the URL.
            raise ValueError("state.url is not a valid Redis URL") from None
        # EVALSHA, loading the script when the server lacks it (after a
        # restart). redis-py types register_script for Redis alone; on a
        # RedisCluster it works the same, each EVALSHA routed by its keys.
        self._admit = self._client.register_script(ADMIT)  # type: ignore[misc]
        self._settle = self._client.register_script(SETTLE)  # type: ignore[misc]
        self._caches: dict[str, ResponseCacheStore] = {}
        # A cluster never gets here with experiments: the config refuses them.
        self._experiments = RedisExperiments(self._client, self._prefix, self._timeout)  # type: ignore[arg-type]
        self._semantic = RedisSemanticEntries(
            self._client, self._prefix, self._timeout, self._evaluate, self._subscriber
        )

    @staticmethod
    def _connect(url: str, timeout: float) -> Redis | RedisCluster:
        return Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )

    async def admit(
        self,
        rates: Sequence[RateLimit] = (),
        budgets: Sequence[BudgetLimit] = (),
        concurrency: Sequence[ConcurrencyLimit] = (),
        *,
        within: StateWait | None = None,
    ) -> Admission:
        if not (rates or budgets or concurrency):
            return Admission()
        leases = tuple(Lease(sessions.key, uuid.uuid4().hex) for sessions in concurrency)
        keys, args = admit_arguments(self._prefix, rates, budgets, concurrency, leases)
        answer = await answer_within(
            _seconds(self._timeout, within), self._evaluate(self._admit, keys, args)
        )
        return admission_of(answer, [*rates, *budgets, *concurrency], leases)

    async def settle(
        self,
        leases: Sequence[Lease] = (),
        charges: Sequence[Charge] = (),
        additions: Sequence[Addition] = (),
        *,
        within: StateWait | None = None,
    ) -> None:
        if not (leases or charges or additions):
            return
        keys, args = settle_arguments(self._prefix, leases, charges, additions)
        await answer_within(
            _seconds(self._timeout, within), self._evaluate(self._settle, keys, args)
        )

    async def _evaluate(self, script: AsyncScript, keys: list[str], args: Args) -> Any:
        return await script(keys=keys, args=args)

    def _subscriber(self) -> AbstractAsyncContextManager[Redis]:
        """The connection the semantic log is followed on: this client's
        (its pool gives the subscription a connection of its own)."""
        assert isinstance(self._client, Redis)
        return contextlib.nullcontext(self._client)

    def cache(self, namespace: str, max_entries: int) -> ResponseCacheStore:
        store = self._caches.get(namespace)
        if store is None:
            cache = RedisCache(
                serializer=NullSerializer(encoding=None),  # bytes in, bytes out
                namespace=f"{self._prefix}cache:{namespace}",
                timeout=None,  # answer_within bounds every call
            )
            # Share this gateway's client, its pool and timeouts; the pool
            # aiocache made for itself is never connected.
            cache.client = self._client
            store = self._caches[namespace] = _RedisCacheStore(cache, self._timeout)
        return store

    @property
    def semantic(self) -> SemanticEntryStore:
        return self._semantic

    @property
    def experiments(self) -> ExperimentStore:
        return self._experiments

    async def aclose(self) -> None:
        self._caches.clear()
        await self._client.aclose()
