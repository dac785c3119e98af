"""A gateway's experiments: what each call of an experiment route leaves in
the state backend, feedback on it, and the results GetExperiment reports.

A route is an experiment when it names a target or adapts its traffic
(`RouteConfig.is_experiment`); only its calls are recorded. A call is
recorded under the variant that answered it, else (it failed) the one it
tried first; a call no target took (refused before, or a cache replay) is
not recorded.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sluice.config.schema import ExperimentsConfig
from sluice.errors import GatewayError, call_not_found, invalid_argument, state_unavailable
from sluice.experiments.posterior import Goal, leader, win_probabilities
from sluice.experiments.results import VariantSummary, summarize
from sluice.experiments.traffic import TrafficSplit, weighted_shares
from sluice.pipeline.call import Call
from sluice.routes import Route, RouteTable
from sluice.state.base import StateUnavailableError
from sluice.state.experiments import (
    CallRecord,
    ExperimentStore,
    FeedbackTaken,
    FeedbackValue,
    TooManyFeedbackNamesError,
)

logger = logging.getLogger(__name__)

# Seeded: the same results always report the same leader confidence.
_LEADER_SEED = 0


@dataclass(frozen=True, slots=True)
class ExperimentResults:
    variants: Sequence[VariantSummary]
    traffic_shares: dict[str, float]
    metric: str  # the feedback name the leader is judged by ("" when none)
    leader: str
    leader_confidence: float


class Experiments:
    def __init__(
        self,
        config: ExperimentsConfig,
        store: ExperimentStore,
        routes: RouteTable,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self.traffic = TrafficSplit(store, routes, rng=rng)

    @staticmethod
    def variant_of(call: Call) -> str | None:
        """The variant `call` is recorded under; None when it is not recorded."""
        route = call.route
        if route is None or not route.is_experiment:
            return None
        if call.answered_by is not None:
            return call.answered_by.variant
        if call.attempts:
            return route.targets[call.attempts[0].target_index].variant
        return None

    async def record(self, call: CallRecord) -> None:
        """Record a finished call; a state failure is logged, never raised:
        the call itself is over."""
        try:
            await self._store.record(call, self._config.retention)
        except StateUnavailableError as error:
            logger.warning("call %s of route %s not recorded: %s", call.call_id, call.route, error)

    async def feedback(
        self, call_id: str, caller: str, name: str, value: FeedbackValue
    ) -> FeedbackTaken:
        try:
            taken = await self._store.feedback(
                call_id, caller, name, value, self._config.max_feedback_names
            )
            if taken is None:
                raise call_not_found(call_id)
            await self.traffic.refresh(taken.route)
        except TooManyFeedbackNamesError:
            raise invalid_argument(
                "name",
                f"the route already keeps {self._config.max_feedback_names} feedback names "
                "(experiments.max_feedback_names)",
            ) from None
        except StateUnavailableError as error:
            raise _unavailable(error) from None
        return taken

    async def results(self, route: Route, since: float | None) -> ExperimentResults:
        """`route`'s results over buckets from `since` (epoch seconds; None:
        all retained)."""
        try:
            buckets = await self._store.buckets(route.name, since)
        except StateUnavailableError as error:
            raise _unavailable(error) from None
        variants = summarize([target.variant for target in route.targets], buckets)
        metric, goal = _metric(route, variants)
        arms = {variant.name: variant.arm(metric) for variant in variants}
        best, confidence = leader(win_probabilities(arms, goal, random.Random(_LEADER_SEED)))
        return ExperimentResults(
            variants, _shares(self.traffic, route, variants), metric, best, confidence
        )


def _metric(route: Route, variants: Sequence[VariantSummary]) -> tuple[str, Goal]:
    """The experiment's metric, else the first feedback name in the results."""
    if route.experiment is not None:
        return route.experiment.metric, route.experiment.goal
    names = sorted({item.name for variant in variants for item in variant.feedback})
    return (names[0] if names else ""), "maximize"


def _shares(
    traffic: TrafficSplit, route: Route, variants: Sequence[VariantSummary]
) -> dict[str, float]:
    """The split the route's strategy makes now: the adaptive or weighted
    one; for any other strategy, the share of calls each variant took."""
    if route.strategy == "experiment":
        return dict(traffic.shares(route))
    if route.strategy == "weighted":
        return weighted_shares(route)
    calls = sum(variant.calls for variant in variants)
    return {variant.name: variant.calls / calls if calls else 0.0 for variant in variants}


def _unavailable(error: StateUnavailableError) -> GatewayError:
    logger.warning("experiments: %s", error)
    return state_unavailable("experiments")
