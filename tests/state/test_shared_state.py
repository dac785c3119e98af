"""The SharedState contract, held by every backend (memory, Redis on a real
redis-server, and a real Redis Cluster, where limits of different keys live
on different masters), then what only Redis promises: exactness across
processes, bounded failure when it is down or hung, recovery by itself."""

from __future__ import annotations

import asyncio
import math
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from sluice.config.periods import Rate
from sluice.config.schema import StateConfig
from sluice.state import SharedState, StateUnavailableError
from sluice.state.base import (
    Addition,
    Admission,
    BudgetLimit,
    Charge,
    ConcurrencyLimit,
    Lease,
    RateLimit,
)
from sluice.state.factory import create_state
from sluice.state.memory import MemoryState
from sluice.state.redis import RedisState
from sluice.state.redis_cluster import RedisClusterState
from tests.redis_cluster import RedisClusterNodes
from tests.redis_server import RedisServer

TEN_PER_SECOND = Rate.parse("10/second")  # one unit every 0.1 s, a burst of 10
TIMEOUT = 0.2
# A cluster client's first call learns the slot map within its timeout: on a
# loaded machine 0.2 s can be too short, and these tests are not about timeouts.
CLUSTER_TIMEOUT = 2.0
SLACK = 0.1  # seconds of work between a step and the check that reads its wait, on a loaded machine


def redis_config(server: RedisServer, key_prefix: str = "sluice:") -> StateConfig:
    return StateConfig(backend="redis", url=server.url, timeout=TIMEOUT, key_prefix=key_prefix)


BACKENDS = {"memory": MemoryState, "redis": RedisState, "redis_cluster": RedisClusterState}


@pytest.fixture(params=BACKENDS)
async def state(request: pytest.FixtureRequest) -> AsyncIterator[SharedState]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        config = redis_config(server)
    elif request.param == "redis_cluster":
        # One cluster serves the session: each test writes under its own prefix.
        cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        config = StateConfig(
            backend="redis_cluster",
            url=cluster.url,
            timeout=CLUSTER_TIMEOUT,
            key_prefix=f"test-{uuid.uuid4().hex}:",
        )
    else:
        config = StateConfig()
    backend = create_state(config)
    assert type(backend) is BACKENDS[request.param]
    try:
        yield backend
    finally:
        await backend.aclose()


# Helpers: each is one admission or settlement, as the limits stage makes them.


def take(key: str, rate: Rate = TEN_PER_SECOND) -> RateLimit:
    return RateLimit(key, rate, 1, take=True)


def check(key: str, cost: float, rate: Rate = TEN_PER_SECOND) -> RateLimit:
    return RateLimit(key, rate, cost)


async def takes(
    state: SharedState, key: str, times: int, rate: Rate = TEN_PER_SECOND
) -> list[bool]:
    """Whether each of `times` admissions, one after another, taking one
    from `key`'s bucket was admitted."""
    return [(await state.admit([take(key, rate)])).admitted for _ in range(times)]


async def hold(state: SharedState, key: str, limit: int, lease_seconds: float = 60) -> Lease | None:
    """A new lease of `key` if fewer than `limit` are held, else None."""
    admission = await state.admit(concurrency=[ConcurrencyLimit(key, limit, lease_seconds)])
    return admission.leases[0] if admission.admitted else None


DAY = 86400.0


async def add(state: SharedState, key: str, amount: float, period: float = DAY) -> None:
    await state.settle(additions=[Addition(key, amount, period)])


async def total_is(state: SharedState, key: str, usd: float, period: float = DAY) -> bool:
    """Whether the total of `key`'s current window is exactly `usd`, as a
    budget sees it: spent at `usd`, not at the next float above it."""
    at = await state.admit(budgets=[BudgetLimit(key, period, usd)])
    above = await state.admit(budgets=[BudgetLimit(key, period, math.nextafter(usd, math.inf))])
    return not at.admitted and above.admitted


# GCRA buckets


async def test_a_bucket_admits_exactly_the_burst_then_says_when(state: SharedState) -> None:
    admissions = [await state.admit([take("k")]) for _ in range(11)]

    assert admissions[:10] == [Admission()] * 10
    refused = admissions[10]
    assert refused.refused == "k"
    assert refused.retry_after == pytest.approx(0.1, abs=SLACK)


async def test_a_bucket_refills_at_its_rate(state: SharedState) -> None:
    await takes(state, "k", 10)
    refused = await state.admit([take("k")])
    assert refused.retry_after is not None

    await asyncio.sleep(refused.retry_after + 0.01)

    assert await takes(state, "k", 2) == [True, False]


@pytest.mark.parametrize(
    ("cost", "refused", "retry_after"),
    # Half the burst is left: 0.1 s to wait per unit over it; over the whole burst, never fits.
    [(1, None, None), (5, None, None), (6, "k", 0.1), (10, "k", 0.5), (11, "k", None)],
)
async def test_a_limit_without_take_answers_for_a_cost_and_takes_nothing(
    state: SharedState, cost: float, refused: str | None, retry_after: float | None
) -> None:
    assert await takes(state, "k", 5) == [True] * 5
    wait = None if retry_after is None else pytest.approx(retry_after, abs=SLACK)

    for _ in range(3):
        admission = await state.admit([check("k", cost)])
        assert admission.refused == refused
        assert admission.retry_after == wait

    assert await takes(state, "k", 6) == [True] * 5 + [False]


async def test_a_charge_puts_the_bucket_in_debt(state: SharedState) -> None:
    # 5 over the burst: 0.5 s of debt
    await state.settle(charges=[Charge("k", TEN_PER_SECOND, 15)])

    checked = await state.admit([check("k", 1)])
    taken = await state.admit([take("k")])

    assert checked.refused == "k"
    assert checked.retry_after == pytest.approx(0.6, abs=SLACK)
    assert taken.refused == "k"
    assert taken.retry_after == pytest.approx(0.6, abs=SLACK)


async def test_buckets_of_different_keys_are_apart(state: SharedState) -> None:
    await takes(state, "a", 10)

    assert await takes(state, "a", 1) == [False]
    assert await takes(state, "b", 1) == [True]


# Leases


async def test_leases_honour_the_limit_and_release_frees_one(state: SharedState) -> None:
    first = await hold(state, "k", 2)
    second = await hold(state, "k", 2)
    assert first is not None
    assert second is not None
    assert first != second
    assert await hold(state, "k", 2) is None
    assert await hold(state, "other", 2) is not None

    await state.settle([first])
    await state.settle([first])  # twice, or an unknown lease: nothing happens
    await state.settle([Lease("k", "unknown")])

    assert await hold(state, "k", 2) is not None
    assert await hold(state, "k", 2) is None


async def test_a_lease_not_released_lapses(state: SharedState) -> None:
    assert await hold(state, "k", 1, 0.2) is not None
    assert await hold(state, "k", 1, 0.2) is None

    await asyncio.sleep(0.25)

    assert await hold(state, "k", 1, 0.2) is not None


# Fixed-window totals


async def test_totals_add_up_per_key(state: SharedState) -> None:
    await add(state, "a", 1.5)
    assert await total_is(state, "a", 1.5)
    await add(state, "a", 2.25)
    await add(state, "b", 0.125)

    assert await total_is(state, "a", 3.75)
    assert await total_is(state, "b", 0.125)
    assert await total_is(state, "c", 0.0)


async def test_a_total_starts_again_in_the_next_window(state: SharedState) -> None:
    # Start just inside a window (windows align to the epoch), so that each
    # addition below and the reads after it fall in one window.
    await asyncio.sleep(0.5 - time.time() % 0.5 + 0.01)
    await add(state, "k", 5, 0.5)
    assert await total_is(state, "k", 5.0, 0.5)

    await asyncio.sleep(0.5)  # whatever the phase, the window has changed

    assert await total_is(state, "k", 0.0, 0.5)
    await add(state, "k", 1, 0.5)
    assert await total_is(state, "k", 1.0, 0.5)


# Admission and settlement: every limit of a call in one atomic operation


async def test_admit_takes_the_takes_and_holds_a_lease_per_limit(state: SharedState) -> None:
    admission = await state.admit(
        [take("requests"), check("tokens", 10)],
        [BudgetLimit("budget", DAY, 1.0)],
        [ConcurrencyLimit("a", 1, 60), ConcurrencyLimit("b", 2, 60)],
    )

    assert admission.admitted
    assert admission.refused is None
    assert [lease.key for lease in admission.leases] == ["a", "b"]
    # One request taken; the tokens only checked; the leases held.
    assert await takes(state, "requests", 10) == [True] * 9 + [False]
    assert await state.admit([check("tokens", 10)]) == Admission()
    assert await hold(state, "a", 1) is None
    assert await hold(state, "b", 2) is not None
    assert await hold(state, "b", 2) is None
    assert await total_is(state, "budget", 0.0)


async def test_a_refused_admission_takes_nothing_from_any_limit(state: SharedState) -> None:
    await takes(state, "full", 10)

    admission = await state.admit(
        [take("other"), take("full")], [], [ConcurrencyLimit("streams", 1, 60)]
    )

    assert not admission.admitted
    assert admission.refused == "full"
    assert admission.leases == ()
    assert admission.retry_after == pytest.approx(0.1, abs=SLACK)
    assert await takes(state, "other", 10) == [True] * 10
    assert await hold(state, "streams", 1) is not None


async def test_a_held_lease_limit_refuses_and_takes_nothing(state: SharedState) -> None:
    held = await hold(state, "streams", 1)
    assert held is not None

    admission = await state.admit(
        [take("requests")],
        [],
        [ConcurrencyLimit("free", 1, 60), ConcurrencyLimit("streams", 1, 60)],
    )

    assert admission == Admission(refused="streams", retry_after=None)
    assert await takes(state, "requests", 10) == [True] * 10
    assert await hold(state, "free", 1) is not None
    await state.settle([held])
    assert (await state.admit([], [], [ConcurrencyLimit("streams", 1, 60)])).admitted


async def test_a_spent_budget_refuses_until_its_window_ends(state: SharedState) -> None:
    await add(state, "budget", 0.5)
    assert (await state.admit([], [BudgetLimit("budget", DAY, 0.75)])).admitted

    await add(state, "budget", 0.25)
    admission = await state.admit([take("requests")], [BudgetLimit("budget", DAY, 0.75)])

    assert admission.refused == "budget"
    assert admission.retry_after == pytest.approx(DAY - time.time() % DAY, abs=1)
    assert await takes(state, "requests", 10) == [True] * 10


async def test_of_several_refusals_a_cost_that_never_fits_then_the_longest_wait(
    state: SharedState,
) -> None:
    await takes(state, "short", 10)
    await state.settle(charges=[Charge("long", TEN_PER_SECOND, 15)])  # 0.6 s until one fits
    await add(state, "budget", 1.0)  # hours until the window ends
    never = check("never", 11)
    short, long, budget = take("short"), take("long"), BudgetLimit("budget", DAY, 1.0)

    longest = await state.admit([short, long])
    assert longest.refused == "long"
    assert longest.retry_after == pytest.approx(0.6, abs=SLACK)
    assert (await state.admit([short, long], [budget])).refused == "budget"
    assert await state.admit([short, never, long], [budget]) == Admission(
        refused="never", retry_after=None
    )
    # A concurrency limit refuses only a call every rate and budget admits.
    await hold(state, "streams", 1)
    assert (await state.admit([long], [], [ConcurrencyLimit("streams", 1, 60)])).refused == "long"


async def test_settle_releases_charges_and_adds_at_once(state: SharedState) -> None:
    admission = await state.admit([], [], [ConcurrencyLimit("streams", 1, 60)])
    assert await hold(state, "streams", 1) is None

    await state.settle(
        admission.leases,
        [Charge("tokens", TEN_PER_SECOND, 15)],
        [Addition("budget", 1.5, DAY), Addition("other", 0.25, DAY)],
    )
    await state.settle([Lease("streams", "unknown")], [], [Addition("budget", 1.0, DAY)])
    await state.settle()

    assert await hold(state, "streams", 1) is not None
    checked = await state.admit([check("tokens", 1)])
    assert checked.retry_after == pytest.approx(0.6, abs=SLACK)  # in debt
    assert await total_is(state, "budget", 2.5)
    assert await total_is(state, "other", 0.25)


# Response cache


async def test_the_cache_gives_back_what_was_set(state: SharedState) -> None:
    cache = state.cache("route", 10)
    assert await cache.get("k") is None

    await cache.set("k", b"\x00\xffanswer", 60)
    assert await cache.get("k") == b"\x00\xffanswer"

    await cache.set("k", b"newer", 60)
    assert await cache.get("k") == b"newer"


async def test_cache_entries_expire_after_their_ttl(state: SharedState) -> None:
    cache = state.cache("route", 10)
    await cache.set("short", b"1", 0.2)
    await cache.set("long", b"2", 60)

    await asyncio.sleep(0.3)

    assert await cache.get("short") is None
    assert await cache.get("long") == b"2"


async def test_cache_namespaces_are_apart(state: SharedState) -> None:
    await state.cache("tenant-a", 10).set("k", b"a", 60)
    await state.cache("tenant-b", 10).set("k", b"b", 60)

    assert await state.cache("tenant-a", 10).get("k") == b"a"
    assert await state.cache("tenant-b", 10).get("k") == b"b"
    assert await state.cache("tenant-c", 10).get("k") is None


async def test_the_memory_cache_evicts_the_least_recently_used() -> None:
    state = MemoryState()
    cache = state.cache("route", 2)
    await cache.set("a", b"a", 60)
    await cache.set("b", b"b", 60)
    await cache.get("a")  # now b is the least recently used

    await cache.set("c", b"c", 60)

    assert [await cache.get(key) for key in "abc"] == [b"a", None, b"c"]
    await state.aclose()


# Redis only

# Admits calls in a separate process, started with the others and admitting
# once all are ready; prints how many were admitted. Each call takes one from
# every bucket given after the attempts, as `key=rate`.
_RACER = """
import asyncio, sys
from redis.asyncio import Redis, RedisCluster
from sluice.config.periods import Rate
from sluice.config.schema import StateConfig
from sluice.state.base import RateLimit
from sluice.state.factory import create_state

async def main(backend, url, prefix, processes, attempts, buckets):
    ready = (RedisCluster if backend == "redis_cluster" else Redis).from_url(url)
    await ready.incr(prefix + "ready")
    while int(await ready.get(prefix + "ready")) < processes:
        await asyncio.sleep(0.005)
    await ready.aclose()
    state = create_state(StateConfig(backend=backend, url=url, timeout=5, key_prefix=prefix))
    limits = [
        RateLimit(key, Rate.parse(rate), 1, take=True)
        for key, rate in (bucket.split("=") for bucket in buckets)
    ]
    admissions = await asyncio.gather(*(state.admit(limits) for _ in range(attempts)))
    await state.aclose()
    print(sum(a.admitted for a in admissions))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
                 sys.argv[6:]))
"""


async def run_racers(
    config: StateConfig, processes: int, attempts: int, *buckets: str
) -> list[int]:
    """What each of `processes` copies of _RACER printed, started at once."""
    assert config.url is not None
    url = config.url.get_secret_value()

    async def racer() -> int:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RACER,
            config.backend,
            url,
            config.key_prefix,
            str(processes),
            str(attempts),
            *buckets,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(child.communicate(), 30)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert child.returncode == 0, stderr.decode()
        return int(stdout)

    return list(await asyncio.gather(*(racer() for _ in range(processes))))


@pytest.fixture(params=["redis", "redis_cluster"])
def shared_config(request: pytest.FixtureRequest) -> StateConfig:
    """A config of a Redis backend, fresh for this test."""
    if request.param == "redis":
        return redis_config(request.getfixturevalue("redis_server"))
    cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
    prefix = f"test-{uuid.uuid4().hex}:"
    return StateConfig(
        backend="redis_cluster", url=cluster.url, timeout=CLUSTER_TIMEOUT, key_prefix=prefix
    )


async def test_a_limit_is_exact_across_processes(shared_config: StateConfig) -> None:
    processes, limit = 2, 25  # each process tries the whole limit at once

    allowed = await run_racers(shared_config, processes, limit, f"shared={limit}/minute")

    assert sum(allowed) == limit


async def test_admission_across_processes_never_exceeds_a_limit_and_refusals_keep_nothing(
    shared_config: StateConfig,
) -> None:
    # On a cluster, `wide` and `narrow` are different scopes on different
    # slots: what `wide` took for a call `narrow` refused is given back.
    attempts = 25  # each process tries the wide limit whole; the narrow one allows 20
    allowed = await run_racers(
        shared_config, 2, attempts, f"wide={attempts}/hour", f"narrow={attempts - 5}/hour"
    )

    admitted = sum(allowed)
    if shared_config.backend == "redis":
        assert admitted == attempts - 5  # one script over both buckets: exact
    else:
        # Each slot's script runs on its own master: a call may be refused by
        # a unit about to be given back (README, Redis Cluster), never admitted
        # beyond a limit.
        assert 0 < admitted <= attempts - 5
    # Calls refused took nothing from the wide bucket: it holds exactly what
    # the admitted ones left.
    state = create_state(shared_config)
    try:
        wide = Rate.parse(f"{attempts}/hour")
        left = attempts - admitted
        assert await takes(state, "wide", left + 1, wide) == [True] * left + [False]
    finally:
        await state.aclose()


@pytest.mark.parametrize(
    ("first_prefix", "second_prefix", "shared"),
    [("sluice:", "sluice:", True), ("team-a:", "team-b:", False)],
)
async def test_replicas_share_counters_and_cache_only_under_one_prefix(
    redis_server: RedisServer, first_prefix: str, second_prefix: str, shared: bool
) -> None:
    first = RedisState(redis_config(redis_server, first_prefix))
    second = RedisState(redis_config(redis_server, second_prefix))
    try:
        assert await takes(first, "k", 10) == [True] * 10
        assert await hold(first, "k", 1) is not None
        await add(first, "k", 2.5)
        await first.cache("route", 10).set("k", b"cached", 60)

        assert await takes(second, "k", 1) == [not shared]
        assert (await hold(second, "k", 1) is None) is shared
        assert await total_is(second, "k", 2.5 if shared else 0.0)
        assert await second.cache("route", 10).get("k") == (b"cached" if shared else None)
    finally:
        await first.aclose()
        await second.aclose()


async def test_every_key_is_prefixed_and_expires(redis_server: RedisServer) -> None:
    # A bucket key lives only until its debt is repaid: at 10/minute one unit is 6 s, long enough
    # that a slow machine still sees the key before it expires (10/second gave it 100 ms).
    ten_per_minute = Rate.parse("10/minute")
    state = RedisState(redis_config(redis_server, "gw1:"))
    raw = Redis.from_url(redis_server.url)
    try:
        await state.admit([take("bucket", ten_per_minute)])
        await state.settle(charges=[Charge("debt", ten_per_minute, 25)])
        await hold(state, "streams", 5, 30)
        await add(state, "spend", 1.0)
        await state.cache("route", 10).set("entry", b"x", 60)

        ttls = {key.decode(): await raw.pttl(key) for key in await raw.keys("*")}
    finally:
        await raw.aclose()
        await state.aclose()

    # Each key's scope in braces: a Redis Cluster hash tag (a single Redis ignores it).
    assert sorted(ttls) == [
        "gw1:cache:route:entry",
        "gw1:leases:{streams}",
        "gw1:rate:{bucket}",
        "gw1:rate:{debt}",
        "gw1:total:{spend}",
    ]
    upper_bounds = {"cache": 60_000, "leases": 30_000, "rate": 150_000, "total": DAY * 1000}
    for key, ttl in ttls.items():
        assert 0 < ttl <= upper_bounds[key.split(":")[1]], key


Operation = Callable[[SharedState], Awaitable[object]]

# Every kind of limit admission and settlement sends to Redis, alone and together.
OPERATIONS: dict[str, Operation] = {
    "admit a take": lambda state: state.admit([take("k")]),
    "admit a check": lambda state: state.admit([check("k", 1)]),
    "admit a budget": lambda state: state.admit(budgets=[BudgetLimit("k", DAY, 1.0)]),
    "admit a lease": lambda state: state.admit(concurrency=[ConcurrencyLimit("k", 5, 60)]),
    "admit every limit": lambda state: state.admit(
        [take("k")], [BudgetLimit("k", DAY, 1.0)], [ConcurrencyLimit("k", 5, 60)]
    ),
    "settle a lease": lambda state: state.settle([Lease("k", "lease")]),
    "settle a charge": lambda state: state.settle(charges=[Charge("k", TEN_PER_SECOND, 1)]),
    "settle an addition": lambda state: state.settle(additions=[Addition("k", 1, DAY)]),
    "settle everything": lambda state: state.settle(
        [Lease("k", "lease")], [Charge("k", TEN_PER_SECOND, 1)], [Addition("k", 1, DAY)]
    ),
    "cache get": lambda state: state.cache("route", 10).get("k"),
    "cache set": lambda state: state.cache("route", 10).set("k", b"v", 60),
}

# How Redis goes away, and how it comes back: down (connections refused), or
# hung (connections accepted, never answered).
OUTAGES: dict[str, tuple[Callable[[RedisServer], None], Callable[[RedisServer], None]]] = {
    "down": (RedisServer.stop, RedisServer.start),
    "hung": (RedisServer.pause, RedisServer.resume),
}


@pytest.mark.parametrize("outage", OUTAGES)
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_an_outage_fails_fast_and_service_resumes_by_itself(
    redis_server: RedisServer, outage: str, operation: str
) -> None:
    state = RedisState(redis_config(redis_server))
    call = OPERATIONS[operation]
    go_away, come_back = OUTAGES[outage]
    try:
        await call(state)  # a pooled connection, which the outage leaves stale
        go_away(redis_server)

        started = time.monotonic()
        with pytest.raises(StateUnavailableError):
            await call(state)
        assert time.monotonic() - started < TIMEOUT * 3

        come_back(redis_server)
        await _served_again(call, state)  # the same RedisState: no restart needed
    finally:
        await state.aclose()


async def _served_again(call: Operation, state: SharedState, within: float = 5.0) -> None:
    """`call` succeeds again within `within` seconds of Redis coming back. A
    paused Redis first works off what queued up meanwhile: on a busy machine
    that can outlast one call's TIMEOUT, once."""
    deadline = time.monotonic() + within
    while True:
        try:
            await call(state)
        except StateUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(TIMEOUT)
        else:
            return


async def test_the_url_and_its_password_stay_out_of_errors(redis_server: RedisServer) -> None:
    password = "hunter2-not-for-logs"
    url = redis_server.url.replace("redis://", f"redis://:{password}@")
    state = RedisState(StateConfig(backend="redis", url=url, timeout=TIMEOUT))
    try:
        # This server has no password, so Redis refuses the AUTH.
        with pytest.raises(StateUnavailableError) as refused:
            await state.admit([take("k")])
    finally:
        await state.aclose()

    rendered = "".join(traceback.format_exception(refused.value))
    assert password not in rendered
    assert str(redis_server.port) not in rendered


async def test_a_malformed_url_is_refused_without_quoting_it() -> None:
    url = "redis://:hunter2-not-for-logs@127.0.0.1:notaport/0"

    with pytest.raises(ValueError, match=r"^state\.url is not a valid Redis URL$") as refused:
        RedisState(StateConfig(backend="redis", url=url))

    assert "hunter2" not in "".join(traceback.format_exception(refused.value))


@pytest.mark.parametrize("prefix", ["team{a}:", "team{", "team}"])
def test_a_cluster_key_prefix_may_not_move_the_hash_tag(prefix: str) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        StateConfig(backend="redis_cluster", url="redis://127.0.0.1:7000", key_prefix=prefix)
