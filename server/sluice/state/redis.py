"""Shared state in Redis: exact across every replica that shares the server.

Each counter operation is one Lua script, so it is atomic however many
replicas race, and reads the time from the Redis server (`TIME`), so replicas
whose clocks disagree still agree on buckets, leases and windows. Every key
starts with `key_prefix`, and every key expires once it no longer matters.

The response cache is aiocache's Redis backend on the same connection pool.
Entries expire by ttl; `max_entries` is not enforced (Redis's own `maxmemory`
policy is the bound there).

A call waits at most `timeout` seconds and is never retried; any failure is
`StateUnavailableError`, and since each call takes a connection afresh from
the pool, calls succeed again as soon as Redis is back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, Literal, TypeVar

from aiocache import RedisCache
from aiocache.serializers import NullSerializer
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sluice.config.periods import Rate
from sluice.config.schema import StateConfig
from sluice.state.base import (
    Addition,
    Admission,
    BudgetLimit,
    Charge,
    ConcurrencyLimit,
    Decision,
    Lease,
    RateLimit,
    ResponseCacheStore,
    StateUnavailableError,
)

_T = TypeVar("_T")

# The server's time in seconds; every script starts with it.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function num(x) return string.format('%.17g', x) end
"""

# GCRA, as MemoryState._gcra. KEYS[1]: the theoretical arrival time (TAT).
# ARGV: count, period, cost, mode (take | check | charge). The key lives
# until its TAT passes, when the bucket is full again.
_BUCKET = (
    _NOW
    + """
local period = tonumber(ARGV[2])
local interval = period / tonumber(ARGV[1])
local stored = tonumber(redis.call('GET', KEYS[1])) or now
local tat = math.max(stored, now) + tonumber(ARGV[3]) * interval
local over = tat - now - period
local allowed = over <= 1e-9
if ARGV[4] == 'charge' or (ARGV[4] == 'take' and allowed) then
  redis.call('SET', KEYS[1], num(tat), 'PX', math.max(1, math.ceil((tat - now) * 1000)))
end
if allowed then return {1, '0'} end
return {0, num(over)}
"""
)

# KEYS[1]: a sorted set of lease ids scored by expiry. ARGV: limit,
# lease_seconds, the new lease id. The set lives as long as its last lease.
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[2])), ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((tonumber(last[2]) - now) * 1000)))
return 1
"""
)

# KEYS[1]: the stem of the window keys (`<stem>:<window index>`, a key the
# script derives, so this suits a single Redis, not a cluster). ARGV: period,
# then the amount to add (none: read). A window's key expires when it ends.
_TOTAL = (
    _NOW
    + """
local period = tonumber(ARGV[1])
local window = math.floor(now / period)
local key = KEYS[1] .. ':' .. string.format('%.0f', window)
if ARGV[2] == nil then return redis.call('GET', key) or '0' end
local total = redis.call('INCRBYFLOAT', key, ARGV[2])
redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil((window + 1) * period * 1000)))
return total
"""
)

# admit: every limit of a call, as the scripts above, in one. KEYS: the rate
# buckets, the budget stems, the lease sets. ARGV: how many of each, then
# per rate count, period, cost, take (1 | 0); per budget period, usd; per
# lease set limit, lease_seconds, the new lease id. Returns {1} when
# admitted (rates with take taken, a lease added to each set), else
# {0, the 1-based index in KEYS of the limit that refused, its wait ('' when
# waiting cannot help)}, having taken nothing.
_ADMIT = (
    _NOW
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
    local stored = tonumber(redis.call('GET', KEYS[i])) or now
    local tat = math.max(stored, now) + cost * (period / count)
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
  local window = math.floor(now / period)
  local total = tonumber(redis.call('GET', KEYS[i] .. ':' .. string.format('%.0f', window))) or 0
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
for _, take in ipairs(taken) do
  redis.call('SET', take[1], num(take[2]), 'PX', math.max(1, math.ceil((take[2] - now) * 1000)))
end
for i = first + 1, first + nleases do
  redis.call('ZADD', KEYS[i], num(now + tonumber(ARGV[arg + 1])), ARGV[arg + 2])
  local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', KEYS[i], math.max(1, math.ceil((tonumber(last[2]) - now) * 1000)))
  arg = arg + 3
end
return {1}
"""
)

# settle: what ends a call, as the scripts above, in one. KEYS: the lease
# sets, the rate buckets, the total stems. ARGV: how many of each, then per
# lease its id; per charge count, period, cost; per addition period, amount.
_SETTLE = (
    _NOW
    + """
local nleases, ncharges, nadditions = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local arg = 4
for i = 1, nleases do
  redis.call('ZREM', KEYS[i], ARGV[arg])
  arg = arg + 1
end
for i = nleases + 1, nleases + ncharges do
  local count, period, cost = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])
  local stored = tonumber(redis.call('GET', KEYS[i])) or now
  local tat = math.max(stored, now) + cost * (period / count)
  redis.call('SET', KEYS[i], num(tat), 'PX', math.max(1, math.ceil((tat - now) * 1000)))
  arg = arg + 3
end
for i = nleases + ncharges + 1, nleases + ncharges + nadditions do
  local period = tonumber(ARGV[arg])
  local window = math.floor(now / period)
  local key = KEYS[i] .. ':' .. string.format('%.0f', window)
  redis.call('INCRBYFLOAT', key, ARGV[arg + 1])
  redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil((window + 1) * period * 1000)))
  arg = arg + 2
end
return 1
"""
)

_Mode = Literal["take", "check", "charge"]


async def _answer(seconds: float, operation: Awaitable[_T]) -> _T:
    """The result of one Redis operation within `seconds`, else
    StateUnavailableError. Its message names only the kind of failure:
    Redis's own may carry the host, and the URL may carry a password."""
    try:
        async with asyncio.timeout(seconds):
            return await operation
    except (RedisError, OSError, TimeoutError) as error:
        raise StateUnavailableError(f"Redis is unavailable ({type(error).__name__})") from None


class _RedisCacheStore:
    def __init__(self, cache: Any, timeout: float) -> None:
        self._cache = cache
        self._timeout = timeout

    async def get(self, key: str) -> bytes | None:
        value = await _answer(self._timeout, self._cache.get(key))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        # A float ttl makes aiocache store with millisecond precision (PSETEX).
        await _answer(self._timeout, self._cache.set(key, value, ttl=float(ttl)))


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
        self._bucket = self._client.register_script(_BUCKET)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._total = self._client.register_script(_TOTAL)
        self._admit = self._client.register_script(_ADMIT)
        self._settle = self._client.register_script(_SETTLE)
        self._caches: dict[str, ResponseCacheStore] = {}

    async def take(self, key: str, rate: Rate, cost: float = 1.0) -> Decision:
        return await self._gcra("take", key, rate, cost)

    async def check(self, key: str, rate: Rate, cost: float) -> Decision:
        return await self._gcra("check", key, rate, cost)

    async def charge(self, key: str, rate: Rate, cost: float) -> None:
        await self._gcra("charge", key, rate, cost)

    async def _gcra(self, mode: _Mode, key: str, rate: Rate, cost: float) -> Decision:
        allowed, retry_after = await _answer(
            self._timeout,
            self._bucket(keys=[self._key("rate", key)], args=[rate.count, rate.period, cost, mode]),
        )
        return Decision(True) if allowed else Decision(False, retry_after=float(retry_after))

    async def acquire(self, key: str, limit: int, lease_seconds: float) -> str | None:
        lease = uuid.uuid4().hex
        acquired = await _answer(
            self._timeout,
            self._acquire(keys=[self._key("leases", key)], args=[limit, lease_seconds, lease]),
        )
        return lease if acquired else None

    async def release(self, key: str, lease: str) -> None:
        await _answer(self._timeout, self._client.zrem(self._key("leases", key), lease))

    async def add(self, key: str, amount: float, period: float) -> float:
        total = await _answer(
            self._timeout, self._total(keys=[self._key("total", key)], args=[period, amount])
        )
        return float(total)

    async def total(self, key: str, period: float) -> float:
        total = await _answer(
            self._timeout, self._total(keys=[self._key("total", key)], args=[period])
        )
        return float(total)

    async def admit(
        self,
        rates: Sequence[RateLimit] = (),
        budgets: Sequence[BudgetLimit] = (),
        concurrency: Sequence[ConcurrencyLimit] = (),
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
        answer = await _answer(self._timeout, self._admit(keys=keys, args=args))
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
        await _answer(self._timeout, self._settle(keys=keys, args=args))

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
                timeout=None,  # _answer bounds every call
            )
            # Share this gateway's client, its pool and timeouts; the pool
            # aiocache made for itself is never connected.
            cache.client = self._client
            store = self._caches[namespace] = _RedisCacheStore(cache, self._timeout)
        return store

    async def aclose(self) -> None:
        self._caches.clear()
        await self._client.aclose()
