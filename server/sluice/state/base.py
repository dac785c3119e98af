"""The interface every shared-state backend implements."""

from __future__ import annotations

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

    def cache(self, namespace: str, max_entries: int) -> ResponseCacheStore:
        """The response cache of one route: an LRU of `max_entries` in memory;
        in Redis, entries expire by ttl and `max_entries` is not enforced."""
        ...

    async def aclose(self) -> None: ...
