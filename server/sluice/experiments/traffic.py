"""The traffic split of `strategy: experiment`, and what GetExperiment
reports as each variant's `traffic_share`.

Until every variant has `min_samples` values of the experiment's metric, the
split is the weighted one. Then:
- `thompson`: each variant's share is its probability of being the best
  (posterior.py), so traffic follows the evidence as it firms up;
- `epsilon_greedy`: the variant with the best mean gets `max_share`.
Either way no variant gets more than `max_share` and each keeps at least
(1 - max_share) / (n - 1), so the others are still measured.

Shares are computed from the shared aggregates (exact across replicas with
Redis) off the call path: a call reads the split it finds, and one that
finds it older than `REFRESH_SECONDS` starts a refresh in the background.
Feedback taken by this replica refreshes its route at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from sluice.config.schema import ExperimentConfig
from sluice.experiments.posterior import win_probabilities
from sluice.experiments.results import VariantSummary, summarize
from sluice.routes import Route
from sluice.state.base import StateUnavailableError
from sluice.state.experiments import ExperimentStore

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0


def weighted_shares(route: Route) -> dict[str, float]:
    total = sum(target.weight for target in route.targets)
    return {target.variant: target.weight / total for target in route.targets}


def adaptive_shares(
    route: Route,
    experiment: ExperimentConfig,
    summaries: Sequence[VariantSummary],
    rng: random.Random,
) -> dict[str, float]:
    """The split `experiment` gives `route` on these results."""
    arms = {summary.name: summary.arm(experiment.metric) for summary in summaries}
    if len(arms) < 2 or any(arm.count < experiment.min_samples for arm in arms.values()):
        return weighted_shares(route)
    if experiment.policy == "thompson":
        preferred = win_probabilities(arms, experiment.goal, rng)
    else:
        pick = max if experiment.goal == "maximize" else min
        best = pick(arms, key=lambda name: arms[name].total / arms[name].count)
        preferred = {name: float(name == best) for name in arms}
    return bounded(preferred, experiment.max_share)


def bounded(shares: Mapping[str, float], max_share: float) -> dict[str, float]:
    """`shares` (any non-negative numbers) made a split summing to 1 in
    which each is within [(1 - max_share) / (n - 1), max_share]: those out of
    bounds are pinned to the bound, the rest scaled to fill what is left."""
    n = len(shares)
    if n == 1:
        return dict.fromkeys(shares, 1.0)
    floor = (1 - max_share) / (n - 1)
    pinned: dict[str, float] = {}
    for _ in range(n):
        free = {name: share for name, share in shares.items() if name not in pinned}
        left = 1 - sum(pinned.values())
        total = sum(free.values())
        scaled = {
            name: left * share / total if total > 0 else left / len(free)
            for name, share in free.items()
        }
        out = {name: max(floor, min(max_share, share)) for name, share in scaled.items()}
        moved = {name: share for name, share in out.items() if share != scaled[name]}
        if not moved:
            return {**pinned, **scaled}
        pinned.update(moved)
    return {**pinned, **{name: floor for name in shares if name not in pinned}}


class TrafficSplit:
    """The current split of each `strategy: experiment` route, refreshed
    from the experiment store."""

    def __init__(
        self,
        store: ExperimentStore,
        routes: Iterable[Route],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._routes = {route.name: route for route in routes if route.experiment is not None}
        self._rng = rng or random.Random()
        self._clock = clock
        self._shares = {name: weighted_shares(route) for name, route in self._routes.items()}
        self._refreshed: dict[str, float] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    def shares(self, route: Route) -> dict[str, float]:
        """`route`'s split now; starts a refresh when it is stale."""
        if route.name not in self._routes:
            return weighted_shares(route)
        refreshed = self._refreshed.get(route.name)
        if refreshed is None or self._clock() - refreshed > REFRESH_SECONDS:
            self._refresh_later(route.name)
        return self._shares[route.name]

    def current(self) -> Mapping[str, Mapping[str, float]]:
        """Every adaptive route's split, by route name."""
        return self._shares

    async def refresh(self, route_name: str) -> None:
        """Recompute `route_name`'s split from every retained result."""
        route = self._routes.get(route_name)
        if route is None or route.experiment is None:
            return
        self._refreshed[route_name] = self._clock()
        buckets = await self._store.buckets(route_name, None)
        summaries = summarize([t.variant for t in route.targets], buckets)
        self._shares[route_name] = adaptive_shares(route, route.experiment, summaries, self._rng)

    def _refresh_later(self, route_name: str) -> None:
        if route_name in self._refreshing:
            return
        self._refreshed[route_name] = self._clock()
        task = asyncio.get_running_loop().create_task(self._quietly(route_name))
        self._refreshing[route_name] = task
        task.add_done_callback(lambda _: self._refreshing.pop(route_name, None))

    async def _quietly(self, route_name: str) -> None:
        try:
            await self.refresh(route_name)
        except StateUnavailableError as error:
            logger.warning("experiment split of route %s not refreshed: %s", route_name, error)
