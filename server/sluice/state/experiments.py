"""Experiment state: who made each call, feedback on it, and per-minute
aggregates of every experiment route, kept for `experiments.retention`.

What a call or a feedback value adds to the aggregates is decided here once
(`call_increments`, `feedback_increments`), as a map of hash field -> amount;
the memory and Redis stores only apply those maps. Each route has one hash
per minute (`variant|calls`, `variant|fb|name|sum`...), so results over any
window are a sum of buckets, and nothing per call is kept past retention.

In Redis a call's record, its feedback and the route's buckets are hashes
that expire with retention; a bucket's key is hash-tagged by route
(`{route}`), so one route's buckets live on one node. Feedback reads the
call's record and earlier value and writes the adjustment in one optimistic
transaction (WATCH/MULTI), retried when another replica raced it: replacing a
value subtracts the old one, exactly, however many replicas take feedback.
"""

from __future__ import annotations

import bisect
import collections
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.exceptions import WatchError

from sluice.state.redis_calls import answer_within
from sluice.state.unavailable import StateUnavailableError

_T = TypeVar("_T")

BUCKET_SECONDS = 60
# Upper bounds (seconds) of the time-to-first-token histogram; the last
# bucket holds everything slower.
TTFT_BOUNDS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Calls the memory store remembers for feedback; the oldest go first.
MEMORY_MAX_CALLS = 100_000
# Tries of a feedback transaction that other replicas keep racing.
_FEEDBACK_TRIES = 8


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A finished call of an experiment route."""

    call_id: str
    route: str
    variant: str
    caller: str  # the key or identity name; "" when anonymous
    failed: bool
    ttft: float | None  # seconds to the first answer chunk
    output_tokens: int | None
    cost: float | None  # USD
    trace_id: str = ""  # hex, "" when untraced
    span_id: str = ""


@dataclass(frozen=True, slots=True)
class FeedbackValue:
    """One value of feedback: a number, a bool (counting 1 or 0), or text
    (kept, never averaged: `number` None)."""

    kind: str  # "number", "bool" or "text"
    number: float | None
    text: str = ""

    def encode(self) -> str:
        if self.number is None:
            return "t:" + self.text
        return f"{self.kind[0]}:{self.number!r}"

    @classmethod
    def decode(cls, stored: str) -> FeedbackValue:
        tag, _, rest = stored.partition(":")
        if tag == "t":
            return cls("text", None, rest)
        return cls("bool" if tag == "b" else "number", float(rest))


@dataclass(frozen=True, slots=True)
class FeedbackTaken:
    """Feedback stored for a call of `route` answered by `variant`."""

    route: str
    variant: str
    replaced: bool
    trace_id: str
    span_id: str


class TooManyFeedbackNamesError(Exception):
    """The route already keeps `experiments.max_feedback_names` names."""


class ExperimentStore(Protocol):
    async def record(self, call: CallRecord, retention: float) -> None:
        """Remember who made `call` and add it to its route's current bucket."""
        ...

    async def feedback(
        self, call_id: str, caller: str, name: str, value: FeedbackValue, max_names: int
    ) -> FeedbackTaken | None:
        """Store `value` as the call's `name` feedback, replacing an earlier
        one; None when no call of `caller` has that id (unknown, expired, or
        another caller's). Raises TooManyFeedbackNamesError for a new name on
        a route that keeps `max_names`."""
        ...

    async def buckets(self, route: str, since: float | None) -> list[dict[str, float]]:
        """The route's buckets that start at or after `since` (epoch seconds;
        None: every one retained)."""
        ...


def minute_of(now: float) -> int:
    return math.floor(now / BUCKET_SECONDS)


def field(variant: str, *parts: str) -> str:
    """A bucket's field; `|` is in no variant or feedback name."""
    return "|".join((variant, *parts))


def call_increments(call: CallRecord) -> dict[str, float]:
    increments = {field(call.variant, "calls"): 1.0}
    if call.failed:
        increments[field(call.variant, "errors")] = 1.0
    if call.ttft is not None:
        index = bisect.bisect_left(TTFT_BOUNDS, call.ttft)
        increments[field(call.variant, "ttft", str(index))] = 1.0
    if call.output_tokens is not None:
        increments[field(call.variant, "usage_calls")] = 1.0
        increments[field(call.variant, "output_tokens")] = float(call.output_tokens)
    if call.cost:
        increments[field(call.variant, "cost")] = call.cost
    return increments


def feedback_increments(
    variant: str, name: str, old: FeedbackValue | None, new: FeedbackValue
) -> dict[str, float]:
    """What storing `new` in place of `old` adds to the call's bucket: the
    old value's share taken back, the new one's added."""
    increments: dict[str, float] = collections.defaultdict(float)
    for value, sign in ((old, -1.0), (new, 1.0)):
        if value is None or value.number is None:
            continue
        increments[field(variant, "fb", name, "n")] += sign
        increments[field(variant, "fb", name, "sum")] += sign * value.number
        increments[field(variant, "fb", name, "sumsq")] += sign * value.number**2
        if value.kind == "bool":
            increments[field(variant, "fb", name, "bools")] += sign
    return {key: amount for key, amount in increments.items() if amount != 0}


def _record_fields(call: CallRecord, minute: int) -> dict[str, str]:
    return {
        "route": call.route,
        "variant": call.variant,
        "caller": call.caller,
        "minute": str(minute),
        "trace": call.trace_id,
        "span": call.span_id,
    }


def _taken(record: Mapping[str, str], replaced: bool) -> FeedbackTaken:
    return FeedbackTaken(
        record["route"], record["variant"], replaced, record["trace"], record["span"]
    )


class MemoryExperiments:
    """`ExperimentStore` in this process; every method completes without
    awaiting, so each is atomic on the event loop."""

    def __init__(
        self, wall_clock: Callable[[], float] = time.time, max_calls: int = MEMORY_MAX_CALLS
    ) -> None:
        self._clock = wall_clock
        self._max_calls = max_calls
        # call id -> (expiry, record fields, feedback name -> stored value)
        self._calls: collections.OrderedDict[str, tuple[float, dict[str, str], dict[str, str]]] = (
            collections.OrderedDict()
        )
        # route -> minute -> (expiry, fields)
        self._buckets: dict[str, dict[int, tuple[float, dict[str, float]]]] = {}
        self._names: dict[str, set[str]] = collections.defaultdict(set)

    async def record(self, call: CallRecord, retention: float) -> None:
        now = self._clock()
        minute = minute_of(now)
        self._calls[call.call_id] = (now + retention, _record_fields(call, minute), {})
        self._calls.move_to_end(call.call_id)
        while len(self._calls) > self._max_calls:
            self._calls.popitem(last=False)
        expiry = (minute + 1) * BUCKET_SECONDS + retention
        self._add(call.route, minute, call_increments(call), expiry)

    async def feedback(
        self, call_id: str, caller: str, name: str, value: FeedbackValue, max_names: int
    ) -> FeedbackTaken | None:
        stored = self._calls.get(call_id)
        if stored is None or stored[0] <= self._clock() or stored[1]["caller"] != caller:
            return None
        _, record, values = stored
        names = self._names[record["route"]]
        if name not in names and len(names) >= max_names:
            raise TooManyFeedbackNamesError
        names.add(name)
        old = values.get(name)
        values[name] = value.encode()
        old_value = None if old is None else FeedbackValue.decode(old)
        minute = int(record["minute"])
        expiry = self._buckets.get(record["route"], {}).get(minute, (stored[0], {}))[0]
        increments = feedback_increments(record["variant"], name, old_value, value)
        self._add(record["route"], minute, increments, expiry)
        return _taken(record, old is not None)

    async def buckets(self, route: str, since: float | None) -> list[dict[str, float]]:
        now = self._clock()
        first = minute_of(since) if since is not None else None
        kept = self._buckets.get(route, {})
        for minute in [minute for minute, (expiry, _) in kept.items() if expiry <= now]:
            del kept[minute]
        return [
            dict(fields) for minute, (_, fields) in kept.items() if first is None or minute >= first
        ]

    def _add(self, route: str, minute: int, increments: Mapping[str, float], expiry: float) -> None:
        buckets = self._buckets.setdefault(route, {})
        _, fields = buckets.setdefault(minute, (expiry, {}))
        for key, amount in increments.items():
            fields[key] = fields.get(key, 0.0) + amount


class RedisExperiments:
    """`ExperimentStore` on the Redis server of `RedisState`, exact across
    replicas. Each operation waits at most `timeout` seconds."""

    def __init__(self, client: Redis, prefix: str, timeout: float) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout = timeout

    async def record(self, call: CallRecord, retention: float) -> None:
        async def write() -> None:
            now = await self._now()
            minute = minute_of(now)
            bucket = self._bucket(call.route, minute)
            bucket_end_ms = ((minute + 1) * BUCKET_SECONDS + retention) * 1000
            async with self._client.pipeline(transaction=True) as pipe:
                call_key = self._key("call", call.call_id)
                pipe.hset(call_key, mapping=_record_fields(call, minute))
                pipe.pexpire(call_key, int(retention * 1000))
                _increment(pipe, bucket, call_increments(call))
                pipe.pexpireat(bucket, int(bucket_end_ms))
                minutes = self._minutes(call.route)
                pipe.zadd(minutes, {str(minute): minute})
                pipe.zremrangebyscore(minutes, "-inf", minute_of(now - retention) - 1)
                pipe.pexpireat(minutes, int(bucket_end_ms))
                await pipe.execute()

        await self._answer(write())

    async def feedback(
        self, call_id: str, caller: str, name: str, value: FeedbackValue, max_names: int
    ) -> FeedbackTaken | None:
        async def transact() -> FeedbackTaken | None:
            for _ in range(_FEEDBACK_TRIES):
                try:
                    return await self._feedback_once(call_id, caller, name, value, max_names)
                except WatchError:
                    continue  # another replica wrote first: read again
            raise StateUnavailableError("feedback kept racing other replicas")

        return await self._answer(transact())

    async def _feedback_once(
        self, call_id: str, caller: str, name: str, value: FeedbackValue, max_names: int
    ) -> FeedbackTaken | None:
        call_key, values_key = self._key("call", call_id), self._key("feedback", call_id)
        async with self._client.pipeline(transaction=True) as transaction:
            # Untyped: redis-py types a pipeline's commands as sync or async alike.
            pipe: Any = transaction
            await pipe.watch(call_key, values_key)
            record = _decoded(await pipe.hgetall(call_key))
            if not record or record.get("caller") != caller:
                return None
            route, minute = record["route"], int(record["minute"])
            names_key = self._names(route)
            await pipe.watch(names_key)
            known = await pipe.sismember(names_key, name)
            if not known and await pipe.scard(names_key) >= max_names:
                raise TooManyFeedbackNamesError
            old = await pipe.hget(values_key, name)
            expires_ms = await pipe.pexpiretime(call_key)
            bucket = self._bucket(route, minute)
            bucket_expires_ms = await pipe.pexpiretime(bucket)
            old_value = None if old is None else FeedbackValue.decode(old.decode())
            pipe.multi()
            pipe.hset(values_key, name, value.encode())
            pipe.pexpireat(values_key, expires_ms)
            pipe.sadd(names_key, name)
            pipe.pexpireat(names_key, max(expires_ms, bucket_expires_ms))
            _increment(pipe, bucket, feedback_increments(record["variant"], name, old_value, value))
            if bucket_expires_ms > 0:  # else the bucket is gone with its calls' results
                pipe.pexpireat(bucket, bucket_expires_ms)
            await pipe.execute()
            return _taken(record, old is not None)

    async def buckets(self, route: str, since: float | None) -> list[dict[str, float]]:
        async def read() -> list[dict[str, float]]:
            low = "-inf" if since is None else minute_of(since)
            minutes = await self._client.zrangebyscore(self._minutes(route), low, "+inf")
            async with self._client.pipeline(transaction=False) as pipe:
                for minute in minutes:
                    pipe.hgetall(self._bucket(route, int(minute)))
                found: list[dict[bytes, bytes]] = await pipe.execute()
            return [{k.decode(): float(v) for k, v in bucket.items()} for bucket in found if bucket]

        return await self._answer(read())

    async def _now(self) -> float:
        """The server's clock, so replicas agree on buckets."""
        seconds, micros = await self._client.time()
        return float(seconds) + float(micros) / 1_000_000

    async def _answer(self, operation: Awaitable[_T]) -> _T:
        return await answer_within(self._timeout, operation)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}experiment:{kind}:{key}"

    def _bucket(self, route: str, minute: int) -> str:
        return f"{self._prefix}experiment:{{{route}}}:{minute}"

    def _minutes(self, route: str) -> str:
        return f"{self._prefix}experiment:{{{route}}}:minutes"

    def _names(self, route: str) -> str:
        return f"{self._prefix}experiment:{{{route}}}:names"


# Fields that hold sums of floats; every other field counts whole units.
_FLOAT_FIELDS = ("|sum", "|sumsq", "|cost")


def _increment(pipe: Any, key: str, increments: Mapping[str, float]) -> None:
    for name, amount in increments.items():
        if name.endswith(_FLOAT_FIELDS):
            pipe.hincrbyfloat(key, name, amount)
        else:
            pipe.hincrby(key, name, round(amount))


def _decoded(stored: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in stored.items()}
