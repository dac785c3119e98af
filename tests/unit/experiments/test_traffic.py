"""The adaptive split: bounds, and a simulation of two variants whose
feedback succeeds 60% and 40% of the time."""

from __future__ import annotations

import random

import pytest

from sluice.config.schema import ExperimentConfig
from sluice.domain import GenerationParams, Operation
from sluice.experiments.results import summarize
from sluice.experiments.stats import wilson_interval
from sluice.experiments.traffic import TrafficSplit, bounded
from sluice.pipeline.selection import TargetStats, order_targets
from sluice.routes import Route, Target
from sluice.state.experiments import CallRecord, FeedbackValue, MemoryExperiments
from tests.unit.pipeline.test_selection import ADAPTER, call

TRUE_RATES = {"better": 0.6, "worse": 0.4}
MAX_SHARE = 0.8
MIN_SAMPLES = 30
CALLS = 1200
# The split reaches its cap for the better variant within this many calls
# (seed 7: from call 81 on) and keeps it.
SHIFTED_WITHIN = 200
REFRESH_EVERY = 20


@pytest.mark.parametrize(
    ("preferred", "max_share", "expected"),
    [
        ({"a": 0.99, "b": 0.01}, 0.8, {"a": 0.8, "b": 0.2}),
        ({"a": 0.6, "b": 0.4}, 0.8, {"a": 0.6, "b": 0.4}),
        ({"a": 1.0, "b": 0.0, "c": 0.0}, 0.8, {"a": 0.8, "b": 0.1, "c": 0.1}),
        ({"a": 0.5, "b": 0.5, "c": 0.0}, 0.8, {"a": 0.45, "b": 0.45, "c": 0.1}),
    ],
)
def test_a_split_stays_within_its_bounds(
    preferred: dict[str, float], max_share: float, expected: dict[str, float]
) -> None:
    assert bounded(preferred, max_share) == pytest.approx(expected)


def experiment_route() -> Route:
    return Route(
        "ab",
        Operation.CHAT,
        tuple(
            Target("mock", "m", ADAPTER, index=i, name=name) for i, name in enumerate(TRUE_RATES)
        ),
        GenerationParams(),
        strategy="experiment",
        is_experiment=True,
        experiment=ExperimentConfig(
            metric="success", policy="thompson", min_samples=MIN_SAMPLES, max_share=MAX_SHARE
        ),
    )


async def test_thompson_shifts_traffic_to_the_better_variant_within_its_bounds() -> None:
    rng = random.Random(7)
    route = experiment_route()
    store = MemoryExperiments()
    traffic = TrafficSplit(store, [route], rng=random.Random(7), clock=lambda: 0.0)
    await traffic.refresh(route.name)
    stats = TargetStats(rng=rng, traffic=traffic)
    picks: list[str] = []
    shares: list[dict[str, float]] = []
    for i in range(CALLS):
        shares.append(dict(traffic.shares(route)))
        variant = order_targets(route, call(), stats)[0].variant
        picks.append(variant)
        await store.record(CallRecord(str(i), "ab", variant, "", False, 0.1, 3, None), 3600)
        success = rng.random() < TRUE_RATES[variant]
        await store.feedback(str(i), "", "success", FeedbackValue("bool", float(success)), 8)
        if i % REFRESH_EVERY == 0:
            await traffic.refresh(route.name)

    floor = (1 - MAX_SHARE) / (len(TRUE_RATES) - 1)
    assert all(MAX_SHARE >= share >= floor for split in shares for share in split.values())
    assert all(split == {"better": 0.5, "worse": 0.5} for split in shares[:MIN_SAMPLES])
    assert all(split["better"] == pytest.approx(MAX_SHARE) for split in shares[SHIFTED_WITHIN:])
    late = picks[SHIFTED_WITHIN:]
    assert late.count("better") / len(late) == pytest.approx(MAX_SHARE, abs=0.04)
    results = {v.name: v for v in summarize(list(TRUE_RATES), await store.buckets("ab", None))}
    for name, rate in TRUE_RATES.items():
        (measured,) = results[name].feedback
        assert measured.ci_low <= rate <= measured.ci_high
        assert (measured.ci_low, measured.ci_high) == pytest.approx(
            wilson_interval(measured.mean * measured.count, measured.count)
        )
