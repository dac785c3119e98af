"""Shared state in Redis: exact across every replica that shares the server.

Admission is one Lua script and settlement another (one round trip each),
so each is atomic however many replicas race; both read the time from the
Redis server (`TIME`), so replicas whose clocks disagree still agree on
buckets, leases and windows. Every key starts with `key_prefix`, and every
key expires once it no longer matters.

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

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from aiocache import RedisCache
from aiocache.serializers import NullSerializer
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

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
    StateWait,
)
from sluice.state.experiments import ExperimentStore, RedisExperiments
from sluice.state.redis_calls import answer_within

_T = TypeVar("_T")

# What both scripts share: the server's time in seconds, and the limit math
# of MemoryState. A bucket's key holds its TAT and lives until the TAT
# passes, when the bucket is full again. A lease set is a sorted set of lease
# ids scored by expiry, living as long as its last lease. A total's key is
# `<stem>:<window index>`, a key the script derives (so this suits a single
# Redis, not a cluster), and expires when its window ends.
_COMMON = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function num(x) return string.format('%.17g', x) end
local function tat_after(key, count, period, cost)
  local stored = tonumber(redis.call('GET', key)) or now
  return math.max(stored, now) + cost * (period / count)
end
local function set_tat(key, tat)
  redis.call('SET', key, num(tat), 'PX', math.max(1, math.ceil((tat - now) * 1000)))
end
local function window(stem, period)
  local index = math.floor(now / period)
  return stem .. ':' .. string.format('%.0f', index), (index + 1) * period
end
"""

# admit: every limit of a call in one script. KEYS: the rate buckets, the
# budget stems, the lease sets. ARGV: how many of each, then per rate count,
# period, cost, take (1 | 0); per budget period, usd; per lease set limit,
# lease_seconds, the new lease id. Returns {1} when admitted (rates with take
# taken, a lease added to each set), else {0, the 1-based index in KEYS of
# the limit that refused, its wait ('' when waiting cannot help)}, having
# taken nothing.
_ADMIT = (
    _COMMON
    + """
local nrates, nbudgets, nleases = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local arg = 4
local refused, wait = nil, -1
local taken = {}
for i = 1, nrates do
  local count, period, cost = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])
  local over
  if cost > count then
    over = math.huge
  else
    local tat = tat_after(KEYS[i], count, period, cost)
    over = tat - now - period
    if over <= 1e-9 then
      over = nil
      if ARGV[arg + 3] == '1' then taken[#taken + 1] = {KEYS[i], tat} end
    end
  end
  if over and over > wait then refused, wait = i, over end
  arg = arg + 4
end
for i = nrates + 1, nrates + nbudgets do
  local period = tonumber(ARGV[arg])
  local key = window(KEYS[i], period)
  local total = tonumber(redis.call('GET', key)) or 0
  if total >= tonumber(ARGV[arg + 1]) then
    local left = period - now % period
    if left > wait then refused, wait = i, left end
  end
  arg = arg + 2
end
if refused then
  if wait == math.huge then return {0, refused, ''} end
  return {0, refused, num(wait)}
end
local first = nrates + nbudgets
for i = first + 1, first + nleases do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', num(now))
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[arg + 3 * (i - first - 1)]) then
    return {0, i, ''}
  end
end
for _, take in ipairs(taken) do set_tat(take[1], take[2]) end
for i = first + 1, first + nleases do
  redis.call('ZADD', KEYS[i], num(now + tonumber(ARGV[arg + 1])), ARGV[arg + 2])
  local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[i], math.max(1, math.ceil((tonumber(last[2]) - now) * 1000)))
  arg = arg + 3
end
return {1}
"""
)

# settle: what ends a call in one script. KEYS: the lease sets, the rate
# buckets, the total stems. ARGV: how many of each, then per lease its id;
# per charge count, period, cost; per addition period, amount.
_SETTLE = (
    _COMMON
    + """
local nleases, ncharges, nadditions = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local arg = 4
for i = 1, nleases do
  redis.call('ZREM', KEYS[i], ARGV[arg])
  arg = arg + 1
end
for i = nleases + 1, nleases + ncharges do
  local count, period, cost = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])
  set_tat(KEYS[i], tat_after(KEYS[i], count, period, cost))
  arg = arg + 3
end
for i = nleases + ncharges + 1, nleases + ncharges + nadditions do
  local key, ends = window(KEYS[i], tonumber(ARGV[arg]))
  redis.call('INCRBYFLOAT', key, ARGV[arg + 1])
  redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil(ends * 1000)))
  arg = arg + 2
end
return 1
"""
)


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
            raise ValueError("state backend redis needs a url")
        self._prefix = config.key_prefix
        self._timeout = config.timeout
        try:
            self._client = Redis.from_url(
                config.url.get_secret_value(),
                socket_timeout=config.timeout,
                socket_connect_timeout=config.timeout,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError:
            # Its message could quote the URL.
            raise ValueError("state.url is not a valid Redis URL") from None
        # EVALSHA, loading the script when the server lacks it (after a restart).
        self._admit = self._client.register_script(_ADMIT)
        self._settle = self._client.register_script(_SETTLE)
        self._caches: dict[str, ResponseCacheStore] = {}
        self._experiments = RedisExperiments(self._client, self._prefix, self._timeout)

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
        keys = [self._key("rate", rate.key) for rate in rates]
        keys += [self._key("total", budget.key) for budget in budgets]
        keys += [self._key("leases", sessions.key) for sessions in concurrency]
        args: list[str | int | float] = [len(rates), len(budgets), len(concurrency)]
        for rate in rates:
            args += [rate.rate.count, rate.rate.period, rate.cost, int(rate.take)]
        for budget in budgets:
            args += [budget.period, budget.usd]
        for sessions, lease in zip(concurrency, leases, strict=True):
            args += [sessions.limit, sessions.lease_seconds, lease.id]
        answer = await answer_within(
            _seconds(self._timeout, within), self._admit(keys=keys, args=args)
        )
        if answer[0]:
            return Admission(leases=leases)
        limits: list[RateLimit | BudgetLimit | ConcurrencyLimit] = [*rates, *budgets, *concurrency]
        wait = answer[2]
        return Admission(
            refused=limits[int(answer[1]) - 1].key, retry_after=float(wait) if wait else None
        )

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
        keys = [self._key("leases", lease.key) for lease in leases]
        keys += [self._key("rate", charge.key) for charge in charges]
        keys += [self._key("total", addition.key) for addition in additions]
        args: list[str | int | float] = [len(leases), len(charges), len(additions)]
        for lease in leases:
            args.append(lease.id)
        for charge in charges:
            args += [charge.rate.count, charge.rate.period, charge.cost]
        for addition in additions:
            args += [addition.period, addition.amount]
        await answer_within(_seconds(self._timeout, within), self._settle(keys=keys, args=args))

    def _key(self, kind: str, key: str) -> str:
        # The kind keeps a bucket, a lease set and a total of one key apart,
        # as MemoryState keeps them in separate maps.
        return f"{self._prefix}{kind}:{key}"

    def cache(self, namespace: str, max_entries: int) -> ResponseCacheStore:
        store = self._caches.get(namespace)
        if store is None:
            cache = RedisCache(
                serializer=NullSerializer(encoding=None),  # bytes in, bytes out
                namespace=self._key("cache", namespace),
                timeout=None,  # answer_within bounds every call
            )
            # Share this gateway's client, its pool and timeouts; the pool
            # aiocache made for itself is never connected.
            cache.client = self._client
            store = self._caches[namespace] = _RedisCacheStore(cache, self._timeout)
        return store

    @property
    def experiments(self) -> ExperimentStore:
        return self._experiments

    async def aclose(self) -> None:
        self._caches.clear()
        await self._client.aclose()
