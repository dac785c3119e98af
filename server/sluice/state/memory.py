"""In-process shared state: the embedded default, exact within one process."""

from __future__ import annotations

import collections
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiocache import SimpleMemoryCache

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
    longest_wait,
)
from sluice.state.experiments import ExperimentStore, MemoryExperiments
from sluice.state.semantic_entries import LocalSemanticEntries


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

    # `within`: memory never makes a call wait.
    async def get(self, key: str, *, within: StateWait | None = None) -> bytes | None:
        value = await self._cache.get(key)
        return value if isinstance(value, bytes) else None

    async def set(
        self, key: str, value: bytes, ttl: float, *, within: StateWait | None = None
    ) -> None:
        await self._cache.set(key, value, ttl=ttl)


class _Buckets:
    """GCRA buckets by key: each unit taken advances a bucket's theoretical
    arrival time (TAT) by period/count, and a cost fits while the TAT it
    makes stays within one period (the burst) of now."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}

    def wait(self, limit: RateLimit, now: float) -> float | None:
        """Seconds until `limit.cost` fits (inf: it never can), or None when
        it fits now."""
        if limit.cost > limit.rate.count:
            return math.inf
        over = self._tat(limit, now) - now - limit.rate.period
        # The tolerance lets a cost that exactly fills the burst fit despite rounding.
        return over if over > 1e-9 else None

    def take(self, limit: RateLimit | Charge, now: float) -> None:
        """Take `limit.cost` whether it fits or not (a charge may leave debt)."""
        self._tats[limit.key] = self._tat(limit, now)

    def _tat(self, limit: RateLimit | Charge, now: float) -> float:
        """The bucket's TAT once `limit.cost` is taken."""
        interval = limit.rate.period / limit.rate.count
        return max(self._tats.get(limit.key, now), now) + limit.cost * interval


class _Windows:
    """Totals of fixed windows of `period` seconds, aligned to the epoch. Only
    the current window of each key is kept: (window index, total)."""

    def __init__(self) -> None:
        self._totals: dict[str, tuple[int, float]] = {}

    def wait(self, limit: BudgetLimit, now: float) -> float | None:
        """Seconds until the window ends when its total has reached
        `limit.usd`, or None while it is below."""
        if self._total(limit.key, math.floor(now / limit.period)) < limit.usd:
            return None
        return limit.period - now % limit.period

    def add(self, addition: Addition, now: float) -> None:
        window = math.floor(now / addition.period)
        self._totals[addition.key] = (window, self._total(addition.key, window) + addition.amount)

    def _total(self, key: str, window: int) -> float:
        stored_window, total = self._totals.get(key, (window, 0.0))
        return total if stored_window == window else 0.0


class _Leases:
    """Leases by key, each held until it is released or lapses."""

    def __init__(self) -> None:
        self._expiries: dict[str, dict[str, float]] = collections.defaultdict(dict)

    def full(self, limit: ConcurrencyLimit, now: float) -> bool:
        """Whether `limit.limit` leases are held, once the lapsed are dropped."""
        expiries = self._expiries[limit.key]
        for lease, expiry in list(expiries.items()):
            if expiry <= now:
                del expiries[lease]
        return len(expiries) >= limit.limit

    def hold(self, limit: ConcurrencyLimit, now: float) -> Lease:
        lease = Lease(limit.key, uuid.uuid4().hex)
        self._expiries[limit.key][lease.id] = now + limit.lease_seconds
        return lease

    def release(self, lease: Lease) -> None:
        self._expiries[lease.key].pop(lease.id, None)


class MemoryState:
    """`SharedState` in this process. Every method completes without
    awaiting, so each is atomic on the event loop. Buckets and leases run on
    `clock`, budget windows on `wall_clock` (they align to the epoch)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._buckets = _Buckets()
        self._windows = _Windows()
        self._leases = _Leases()
        self._caches: dict[str, ResponseCacheStore] = {}
        self._experiments = MemoryExperiments(wall_clock)
        self._semantic = LocalSemanticEntries()

    async def admit(
        self,
        rates: Sequence[RateLimit] = (),
        budgets: Sequence[BudgetLimit] = (),
        concurrency: Sequence[ConcurrencyLimit] = (),
        *,
        within: StateWait | None = None,
    ) -> Admission:
        now, wall_now = self._clock(), self._wall_clock()
        refusal = longest_wait(
            [(limit.key, self._buckets.wait(limit, now)) for limit in rates]
            + [(limit.key, self._windows.wait(limit, wall_now)) for limit in budgets]
        )
        if refusal is not None:
            key, wait = refusal
            return Admission(refused=key, retry_after=None if wait == math.inf else wait)
        full = next((limit.key for limit in concurrency if self._leases.full(limit, now)), None)
        if full is not None:
            return Admission(refused=full)
        for limit in rates:
            if limit.take:
                self._buckets.take(limit, now)
        return Admission(leases=tuple(self._leases.hold(limit, now) for limit in concurrency))

    async def settle(
        self,
        leases: Sequence[Lease] = (),
        charges: Sequence[Charge] = (),
        additions: Sequence[Addition] = (),
        *,
        within: StateWait | None = None,
    ) -> None:
        now, wall_now = self._clock(), self._wall_clock()
        for lease in leases:
            self._leases.release(lease)
        for charge in charges:
            self._buckets.take(charge, now)
        for addition in additions:
            self._windows.add(addition, wall_now)

    def cache(self, namespace: str, max_entries: int) -> ResponseCacheStore:
        store = self._caches.get(namespace)
        if store is None:
            store = self._caches[namespace] = _MemoryCacheStore(max_entries)
        return store

    @property
    def semantic(self) -> SemanticEntryStore:
        return self._semantic

    @property
    def experiments(self) -> ExperimentStore:
        return self._experiments

    async def aclose(self) -> None:
        self._caches.clear()
