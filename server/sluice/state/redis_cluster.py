"""Shared state on a Redis Cluster, for a fleet one Redis cannot carry.

The client learns the cluster from any seed node in `url` and routes each
script to the master of its keys' slot, following MOVED and ASK redirects
and reloading the slot map after a failover. Every key of one scope (a
route's limits, or an API key's) shares a slot (`redis_scripts.state_key`),
so admitting or settling one scope is one script on one master, atomic as
on a single Redis.

A call limited in several scopes (its route's and its key's) spans slots,
which no script can: each scope is admitted by its own script, all at once.
When every scope admits, the call holds what each took. When one refuses or
fails, what the others took is given back (leases released, takes returned)
before the refusal is reported, within what is left of `timeout`. So no
limit ever admits more than it allows, and a refused call ends up taking
nothing; but between a take and its return (one round trip), a racing call
can be refused by a unit another call is about to give back. A give-back
that fails leaves the unit taken until it refills (a lease lapses): errors
only ever refuse more, never admit more.

The semantic cache's log (redis_semantic.py) keeps each route's entries in
one slot, and announces them by classic PUBLISH, which a cluster carries to
every node: a replica follows it on a plain connection to any one node, and
on losing that node, on the next one the cluster client knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypeVar

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from sluice.config.schema import StateConfig
from sluice.state.base import (
    Addition,
    Admission,
    BudgetLimit,
    Charge,
    ConcurrencyLimit,
    Lease,
    RateLimit,
    StateUnavailableError,
    StateWait,
    longest_wait,
)
from sluice.state.redis import RedisState
from sluice.state.redis_calls import answer_within
from sluice.state.redis_scripts import Args, scope_of

# Redirects and failovers are retried at once, with the slot map reloaded;
# `timeout` bounds the whole call, retries included.
_CLUSTER_RETRIES = 3


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


_K = TypeVar("_K", bound=_Keyed)


def _scopes(*kinds: Sequence[_Keyed]) -> list[str]:
    """The scopes of these limits' keys, in the order first given."""
    return list(dict.fromkeys(scope_of(item.key) for kind in kinds for item in kind))


def _in_scope(items: Sequence[_K], scope: str) -> list[_K]:
    return [item for item in items if scope_of(item.key) == scope]


def _reported(
    limits: Sequence[RateLimit | BudgetLimit],
    concurrency: Sequence[ConcurrencyLimit],
    admissions: Sequence[Admission],
) -> Admission | None:
    """The refusal `admit` reports of the scopes' `admissions`, by the rule of
    `SharedState.admit` (each scope's script reports its own by that rule):
    the longest wait of a rate or budget, a cost that never fits counting as
    forever; else a concurrency limit's (the first given)."""
    refusals = {admission.refused: admission for admission in admissions if admission.refused}
    if not refusals:
        return None
    waits = (
        (limit.key, _wait(refusals[limit.key]) if limit.key in refusals else None)
        for limit in limits
    )
    longest = longest_wait(waits)
    if longest is not None:
        return refusals[longest[0]]
    return next(refusals[sessions.key] for sessions in concurrency if sessions.key in refusals)


def _wait(refusal: Admission) -> float:
    return float("inf") if refusal.retry_after is None else refusal.retry_after


class RedisClusterState(RedisState):
    """`SharedState` on a Redis Cluster: one script per scope of a call."""

    def __init__(self, config: StateConfig) -> None:
        super().__init__(config)
        self._subscriptions = itertools.count()  # which node the next one is on

    @staticmethod
    def _connect(url: str, timeout: float) -> RedisCluster:
        return RedisCluster.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), _CLUSTER_RETRIES),
        )

    async def _evaluate(self, script: AsyncScript, keys: list[str], args: Args) -> Any:
        cluster = self._client
        assert isinstance(cluster, RedisCluster)
        # Learn the slot map first (a no-op once known): scripts sent at
        # once by a client that has not yet learned it race and fail.
        await cluster.initialize()
        evalsha = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await cluster.execute_command(*evalsha)
        except NoScriptError:
            # Each node caches scripts on its own: a replica promoted by a
            # failover has none. redis-py would load the script on the
            # masters it knows, and may still count the promoted node a
            # replica (it learned the move from a MOVED): load it where
            # these keys live.
            node = cluster.get_node_from_key(keys[0])
            await cluster.execute_command("SCRIPT LOAD", script.script, target_nodes=node)
            return await cluster.execute_command(*evalsha)

    @contextlib.asynccontextmanager
    async def _subscriber(self) -> AsyncIterator[Redis]:
        """A plain connection to one of the cluster's nodes, each in turn, so
        a follower that lost one subscribes next on another.

        Classic pub/sub, not sharded (SPUBLISH to a shard channel per
        route's hash tag): redis-py's asyncio cluster client offers neither,
        and its PubSub no SSUBSCRIBE, so sharded would mean following each
        route's slot to its node through failovers and resharding by hand.
        A classic PUBLISH reaches every node over the cluster bus, one
        message per answer stored (not per call): any node will do."""
        cluster = self._client
        assert isinstance(cluster, RedisCluster)
        await answer_within(self._timeout, cluster.initialize())
        nodes = sorted(cluster.get_nodes(), key=lambda node: node.name)
        node = nodes[next(self._subscriptions) % len(nodes)]
        # The node's own settings (timeouts, password, TLS); never retried:
        # a lost subscription is followed afresh, the log read again.
        settings = node.connection_kwargs | {"retry": Retry(NoBackoff(), 0)}
        client = Redis.from_pool(ConnectionPool(node.connection_class, **settings))
        try:
            yield client
        finally:
            await client.aclose()

    async def admit(
        self,
        rates: Sequence[RateLimit] = (),
        budgets: Sequence[BudgetLimit] = (),
        concurrency: Sequence[ConcurrencyLimit] = (),
        *,
        within: StateWait | None = None,
    ) -> Admission:
        # The give-back shares the call's one wait: it is part of admitting.
        wait = within or StateWait()
        deadline = asyncio.get_running_loop().time() + wait.left(self._timeout)
        admit_scope = super().admit
        scopes = _scopes(rates, budgets, concurrency)
        answers = await asyncio.gather(
            *(
                admit_scope(
                    _in_scope(rates, scope),
                    _in_scope(budgets, scope),
                    _in_scope(concurrency, scope),
                    within=wait,
                )
                for scope in scopes
            ),
            return_exceptions=True,
        )
        admissions = [answer for answer in answers if isinstance(answer, Admission)]
        failure = next((answer for answer in answers if isinstance(answer, BaseException)), None)
        refusal = None if failure else _reported([*rates, *budgets], concurrency, admissions)
        if failure is None and refusal is None:
            held = {lease.key: lease for admission in admissions for lease in admission.leases}
            return Admission(leases=tuple(held[sessions.key] for sessions in concurrency))
        taken_scopes = {
            scope
            for scope, answer in zip(scopes, answers, strict=True)
            if isinstance(answer, Admission) and answer.admitted
        }
        await self._give_back(deadline, rates, admissions, taken_scopes)
        if failure is not None:
            raise failure
        assert refusal is not None
        return refusal

    async def _give_back(
        self,
        deadline: float,
        rates: Sequence[RateLimit],
        admissions: Sequence[Admission],
        scopes: set[str],
    ) -> None:
        """Return what the admitted `scopes` took: their leases, and each
        take as a negative charge (the bucket's TAT moved back)."""
        if not scopes:
            return
        leases = [lease for admission in admissions for lease in admission.leases]
        returns = [
            Charge(rate.key, rate.rate, -rate.cost)
            for rate in rates
            if rate.take and scope_of(rate.key) in scopes
        ]
        with contextlib.suppress(StateUnavailableError, TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self.settle(leases, returns)

    async def settle(
        self,
        leases: Sequence[Lease] = (),
        charges: Sequence[Charge] = (),
        additions: Sequence[Addition] = (),
        *,
        within: StateWait | None = None,
    ) -> None:
        settle_scope = super().settle
        answers = await asyncio.gather(
            *(
                settle_scope(
                    _in_scope(leases, scope),
                    _in_scope(charges, scope),
                    _in_scope(additions, scope),
                    within=within,
                )
                for scope in _scopes(leases, charges, additions)
            ),
            return_exceptions=True,
        )
        failure = next((answer for answer in answers if isinstance(answer, BaseException)), None)
        if failure is not None:
            raise failure
