"""The interface every shared-state backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sluice.config.periods import Rate


class StateUnavailableError(Exception):
    """The backend did not answer in time or is down."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # Seconds until the cost asked for would be allowed (0 when allowed).
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A GCRA bucket `admit` checks for `cost`, as `check` does; with `take`,
    an admitted call also takes the cost, as `take` does."""

    key: str
    rate: Rate
    cost: float
    take: bool = False


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """Admits while the total of `key`'s current window of `period` seconds
    (as `total`) is below `usd`."""

    key: str
    period: float
    usd: float


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """Admits while fewer than `limit` leases of `key` are held (as
    `acquire`); an admitted call holds a new one for `lease_seconds`."""

    key: str
    limit: int
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class Lease:
    key: str
    id: str


@dataclass(frozen=True, slots=True)
class Charge:
    """`charge(key, rate, cost)`: taken unconditionally."""

    key: str
    rate: Rate
    cost: float


@dataclass(frozen=True, slots=True)
class Addition:
    """`add(key, amount, period)`."""

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


class ResponseCacheStore(Protocol):
    """Cached answers of one route: opaque bytes by key."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...


class SharedState(Protocol):
    async def take(self, key: str, rate: Rate, cost: float = 1.0) -> Decision:
        """Take `cost` from a GCRA bucket that refills at `rate` and holds at
        most `rate.count`: allowed and taken, or refused with when to retry.
        Exact across every process sharing the backend."""
        ...

    async def check(self, key: str, rate: Rate, cost: float) -> Decision:
        """Whether `take(key, rate, cost)` would be allowed now, taking nothing."""
        ...

    async def charge(self, key: str, rate: Rate, cost: float) -> None:
        """Take `cost` unconditionally (it may leave the bucket in debt): for
        usage known only when a stream ends."""
        ...

    async def acquire(self, key: str, limit: int, lease_seconds: float) -> str | None:
        """A lease id if fewer than `limit` leases are held, else None. A
        lease not released lapses after `lease_seconds` (a crashed replica)."""
        ...

    async def release(self, key: str, lease: str) -> None: ...

    async def add(self, key: str, amount: float, period: float) -> float:
        """Add to the total of the current fixed window of `period` seconds
        (aligned to the epoch, so `day` is a UTC day); return the new total."""
        ...

    async def total(self, key: str, period: float) -> float:
        """The total of the current window of `period` seconds."""
        ...

    async def admit(
        self,
        rates: Sequence[RateLimit] = (),
        budgets: Sequence[BudgetLimit] = (),
        concurrency: Sequence[ConcurrencyLimit] = (),
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
    ) -> None:
        """What ends a call, in one operation: release `leases`, `charge`
        each charge and `add` each addition."""
        ...

    def cache(self, namespace: str, max_entries: int) -> ResponseCacheStore:
        """The response cache of one route: an LRU of `max_entries` in memory;
        in Redis, entries expire by ttl and `max_entries` is not enforced."""
        ...

    async def aclose(self) -> None: ...
