"""The interface every shared-state backend implements."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sluice.config.periods import Rate
from sluice.semantic_index import SemanticEntry

# Re-exported: the backends' callers import it from here.
from sluice.state.unavailable import StateUnavailableError as StateUnavailableError  # noqa: PLC0414

if TYPE_CHECKING:
    from sluice.state.experiments import ExperimentStore


class StateWait:
    """One `state.timeout` that several operations of a call share, so a
    call waits on a hung backend once, not once per operation: the first
    operation starts the clock, the others wait what is left."""

    __slots__ = ("_deadline",)

    def __init__(self) -> None:
        self._deadline: float | None = None

    def left(self, timeout: float) -> float:
        """Seconds an operation starting now may wait, of `timeout` in all."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + timeout
        return max(0.0, self._deadline - now)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A GCRA bucket that refills at `rate` and holds at most `rate.count`:
    it admits `cost` while taking it would stay within the burst. With
    `take`, an admitted call takes the cost; without, it is only checked."""

    key: str
    rate: Rate
    cost: float
    take: bool = False


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """Admits while the total of `key`'s current window of `period` seconds
    (see `Addition`) is below `usd`."""

    key: str
    period: float
    usd: float


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """Admits while fewer than `limit` leases of `key` are held; an admitted
    call holds a new one, which lapses after `lease_seconds` unless settled
    first (so a crashed replica's leases come free)."""

    key: str
    limit: int
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class Lease:
    key: str
    id: str


@dataclass(frozen=True, slots=True)
class Charge:
    """`cost` taken from a `RateLimit`'s bucket unconditionally (it may leave
    the bucket in debt): for usage known only when a stream ends."""

    key: str
    rate: Rate
    cost: float


@dataclass(frozen=True, slots=True)
class Addition:
    """`amount` added to the total of `key`'s current fixed window of
    `period` seconds, aligned to the epoch (so a `day` is a UTC day)."""

    key: str
    amount: float
    period: float


@dataclass(frozen=True, slots=True)
class Admission:
    """What `admit` decided: admitted holding `leases`, or refused by the
    limit whose key is `refused` (and then nothing was taken)."""

    leases: tuple[Lease, ...] = ()
    refused: str | None = None
    # Seconds until the refusing limit could admit; None when waiting cannot
    # help (a cost over its rate's count) or cannot be told (a lease limit).
    retry_after: float | None = None

    @property
    def admitted(self) -> bool:
        return self.refused is None


def longest_wait(waits: Iterable[tuple[str, float | None]]) -> tuple[str, float] | None:
    """The refusal `admit` reports of (key, wait) pairs, None meaning no
    refusal: the longest wait, the first given of equals."""
    refusals = [(key, wait) for key, wait in waits if wait is not None]
    return max(refusals, key=lambda refusal: refusal[1], default=None)


class ResponseCacheStore(Protocol):
    """Cached answers of one route: opaque bytes by key."""

    async def get(self, key: str, *, within: StateWait | None = None) -> bytes | None: ...

    async def set(
        self, key: str, value: bytes, ttl: float, *, within: StateWait | None = None
    ) -> None: ...


class SemanticEntryStore(Protocol):
    """The semantic cache's shared log. Each replica looks questions up in
    its own in-memory index (semantic_index.py) and learns its entries from
    here: `share` stores one where every replica sharing the backend sees it,
    `entries` reads a route's (a replica starting rebuilds its index from
    them) and `follow` tells of those others store from then on."""

    async def share(
        self, entry: SemanticEntry, ttl: float, max_entries: int, *, within: StateWait | None = None
    ) -> None:
        """Store `entry` for `ttl` seconds, its route keeping its newest
        `max_entries`, and tell every follower."""
        ...

    async def entries(self, route: str, max_entries: int) -> list[SemanticEntry]:
        """`route`'s newest `max_entries` entries still stored, oldest first."""
        ...

    async def follow(
        self, learn: Callable[[SemanticEntry], None], ready: Callable[[], Awaitable[None]]
    ) -> None:
        """Once listening, await `ready` (which may read `entries`: none
        stored meanwhile is missed), then `learn` each entry shared from then
        on, until cancelled. Raises StateUnavailableError when the backend is
        lost; returns once ready when there is nothing to follow."""
        ...


class SharedState(Protocol):
    """The counters behind limits and budgets, and the response cache. Every
    limit is exact across every process sharing the backend."""

    async def admit(
        self,
        rates: Sequence[RateLimit] = (),
        budgets: Sequence[BudgetLimit] = (),
        concurrency: Sequence[ConcurrencyLimit] = (),
        *,
        within: StateWait | None = None,
    ) -> Admission:
        """Every limit of a call at once, atomically: when all admit, take
        the `take` rates and acquire a lease per concurrency limit; else take
        nothing and name the limit that refused. Of several refusing rates and
        budgets, the one reported is one whose cost exceeds its rate's count
        (never admitted), else the longest wait (ties: the first given, rates
        before budgets); concurrency limits are judged only when every rate
        and budget admits. Keys must be distinct."""
        ...

    async def settle(
        self,
        leases: Sequence[Lease] = (),
        charges: Sequence[Charge] = (),
        additions: Sequence[Addition] = (),
        *,
        within: StateWait | None = None,
    ) -> None:
        """What ends a call, in one operation: release `leases` (an unknown
        or lapsed one is ignored), take each charge and make each addition.
        Each operation that is given a `within` waits at most what is left of
        it, `state.timeout` in all; without one, `state.timeout`."""
        ...

    def cache(self, namespace: str, max_entries: int) -> ResponseCacheStore:
        """The response cache of one route: an LRU of `max_entries` in memory;
        in Redis, entries expire by ttl and `max_entries` is not enforced."""
        ...

    @property
    def semantic(self) -> SemanticEntryStore:
        """The semantic cache's entries, shared by every replica (in memory:
        by none, there is no other)."""
        ...

    @property
    def experiments(self) -> ExperimentStore:
        """Call records, feedback and experiment results (experiments.py)."""
        ...

    async def aclose(self) -> None: ...
