"""In-process shared state: the embedded default, exact within one process."""

from __future__ import annotations

import collections
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiocache import SimpleMemoryCache

from sluice.config.periods import Rate
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
)


class LRUMemoryCache(SimpleMemoryCache):  # type: ignore[misc]
    """aiocache's memory cache, bounded: the least recently used entry goes
    when `max_entries` is exceeded."""

    def __init__(self, max_entries: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cache: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._max_entries = max_entries

    async def _get(self, key: str, encoding: str = "utf-8", _conn: object = None) -> object:
        value = self._cache.get(key)
        if value is not None:
            self._cache.move_to_end(key)
        return value

    async def _set(
        self,
        key: str,
        value: object,
        ttl: float | None = None,
        _cas_token: object = None,
        _conn: object = None,
    ) -> bool:
        stored: bool = await super()._set(key, value, ttl=ttl, _cas_token=_cas_token, _conn=_conn)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            await self._delete(next(iter(self._cache)))
        return stored


class _MemoryCacheStore:
    def __init__(self, max_entries: int) -> None:
        self._cache = LRUMemoryCache(max_entries)

    async def get(self, key: str) -> bytes | None:
        value = await self._cache.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._cache.set(key, value, ttl=ttl)


class MemoryState:
    """`SharedState` in this process. Every method completes without
    awaiting, so each is atomic on the event loop."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._tats: dict[str, float] = {}  # GCRA theoretical arrival times
        self._leases: dict[str, dict[str, float]] = collections.defaultdict(dict)
        # Only the current window of each key: (window index, total).
        self._totals: dict[str, tuple[int, float]] = {}
        self._caches: dict[str, ResponseCacheStore] = {}

    async def take(self, key: str, rate: Rate, cost: float = 1.0) -> Decision:
        decision, tat = self._gcra(key, rate, cost)
        if decision.allowed:
            self._tats[key] = tat
        return decision

    async def check(self, key: str, rate: Rate, cost: float) -> Decision:
        return self._gcra(key, rate, cost)[0]

    async def charge(self, key: str, rate: Rate, cost: float) -> None:
        self._tats[key] = self._gcra(key, rate, cost)[1]

    def _gcra(self, key: str, rate: Rate, cost: float) -> tuple[Decision, float]:
        """GCRA: each unit advances a theoretical arrival time by
        period/count; a cost fits while that time stays within one period
        (the burst) of now."""
        now = self._clock()
        interval = rate.period / rate.count
        tat = max(self._tats.get(key, now), now) + cost * interval
        over = tat - now - rate.period
        if over > 1e-9:
            return Decision(False, retry_after=over), tat
        return Decision(True), tat

    async def acquire(self, key: str, limit: int, lease_seconds: float) -> str | None:
        now = self._clock()
        if self._live_leases(key, now) >= limit:
            return None
        lease = uuid.uuid4().hex
        self._leases[key][lease] = now + lease_seconds
        return lease

    def _live_leases(self, key: str, now: float) -> int:
        """How many leases of `key` are held, once the lapsed are dropped."""
        leases = self._leases[key]
        for lease, expiry in list(leases.items()):
            if expiry <= now:
                del leases[lease]
        return len(leases)

    async def release(self, key: str, lease: str) -> None:
        self._leases[key].pop(lease, None)

    async def add(self, key: str, amount: float, period: float) -> float:
        window = self._window(period)
        total = self._total(key, window) + amount
        self._totals[key] = (window, total)
        return total

    async def total(self, key: str, period: float) -> float:
        return self._total(key, self._window(period))

    def _total(self, key: str, window: int) -> float:
        stored_window, total = self._totals.get(key, (window, 0.0))
        return total if stored_window == window else 0.0

    def _window(self, period: float) -> int:
        return math.floor(self._wall_clock() / period)

    async def admit(
        self,
        rates: Sequence[RateLimit] = (),
        budgets: Sequence[BudgetLimit] = (),
        concurrency: Sequence[ConcurrencyLimit] = (),
    ) -> Admission:
        refused: str | None = None
        wait = -1.0
        tats: list[tuple[str, float]] = []
        for limit in rates:
            if limit.cost > limit.rate.count:
                over = math.inf
            else:
                decision, tat = self._gcra(limit.key, limit.rate, limit.cost)
                if decision.allowed:
                    if limit.take:
                        tats.append((limit.key, tat))
                    continue
                over = decision.retry_after
            if over > wait:
                refused, wait = limit.key, over
        for budget in budgets:
            window = self._window(budget.period)
            if self._total(budget.key, window) >= budget.usd:
                left = budget.period - self._wall_clock() % budget.period
                if left > wait:
                    refused, wait = budget.key, left
        if refused is not None:
            return Admission(refused=refused, retry_after=None if wait == math.inf else wait)
        now = self._clock()
        for lease_limit in concurrency:
            if self._live_leases(lease_limit.key, now) >= lease_limit.limit:
                return Admission(refused=lease_limit.key)
        for key, tat in tats:
            self._tats[key] = tat
        leases = []
        for lease_limit in concurrency:
            lease = uuid.uuid4().hex
            self._leases[lease_limit.key][lease] = now + lease_limit.lease_seconds
            leases.append(Lease(lease_limit.key, lease))
        return Admission(leases=tuple(leases))

    async def settle(
        self,
        leases: Sequence[Lease] = (),
        charges: Sequence[Charge] = (),
        additions: Sequence[Addition] = (),
    ) -> None:
        for lease in leases:
            self._leases[lease.key].pop(lease.id, None)
        for charge in charges:
            self._tats[charge.key] = self._gcra(charge.key, charge.rate, charge.cost)[1]
        for addition in additions:
            window = self._window(addition.period)
            self._totals[addition.key] = (
                window,
                self._total(addition.key, window) + addition.amount,
            )

    def cache(self, namespace: str, max_entries: int) -> ResponseCacheStore:
        store = self._caches.get(namespace)
        if store is None:
            store = self._caches[namespace] = _MemoryCacheStore(max_entries)
        return store

    async def aclose(self) -> None:
        self._caches.clear()
