"""Target selection: each strategy's exact order, the weighted split and its
stickiness, latency estimates with exploration, prices, and rule pins."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from sluice.config.schema import Price, RuleConfig, StickyMetadata, Strategy
from sluice.domain import ChatRequest, GenerationParams, Message, Operation, Role, TextPart
from sluice.identity import Caller
from sluice.pipeline.call import Call
from sluice.pipeline.selection import TargetStats, order_targets
from sluice.pricing import PriceTable
from sluice.providers.mock import MockAdapter, MockSettings
from sluice.routes import Route, Target

ADAPTER = MockAdapter(MockSettings(provider="mock"))
SPLIT_CALLS = 10_000
SPLIT_TOLERANCE = 0.02


def targets(*models: str, weights: tuple[int, ...] = ()) -> tuple[Target, ...]:
    return tuple(
        Target("openai", model, ADAPTER, index=i, weight=weights[i] if weights else 1)
        for i, model in enumerate(models)
    )


def route(
    models: tuple[str, ...] = ("a", "b", "c"),
    *,
    strategy: Strategy = "fallback",
    weights: tuple[int, ...] = (),
    sticky: str | StickyMetadata | None = None,
    rules: tuple[dict[str, Any], ...] = (),
    name: str = "r",
) -> Route:
    return Route(
        name,
        Operation.CHAT,
        targets(*models, weights=weights),
        GenerationParams(),
        strategy=strategy,
        sticky=sticky,
        rules=tuple(RuleConfig.model_validate(rule) for rule in rules),
    )


def call(
    text: str = "hi", headers: Mapping[str, str] | None = None, key: str | None = None
) -> Call:
    request = ChatRequest("r", (Message(Role.USER, (TextPart(text),)),))
    caller = Caller(key, None) if key is not None else None
    return Call(request=request, headers=headers or {}, caller=caller)


def models(order: list[Target]) -> list[str]:
    return [target.model for target in order]


def stats(seed: int = 7, **options: Any) -> TargetStats:
    return TargetStats(rng=random.Random(seed), **options)


@pytest.mark.parametrize("strategy", ["fallback", "rules"])
def test_config_order(strategy: Strategy) -> None:
    rules = ({"when": {"key": "nobody"}, "target": 2},)
    assert models(order_targets(route(strategy=strategy, rules=rules), call(), stats())) == [
        "a",
        "b",
        "c",
    ]


# --- weighted ------------------------------------------------------------------

WEIGHTS = (70, 20, 10, 0)
WEIGHTED_MODELS = ("a", "b", "c", "zero")


@pytest.mark.parametrize(
    ("sticky", "nth_call"),
    [
        (None, lambda i: call()),
        (StickyMetadata(metadata="X-User"), lambda i: call(headers={"x-user": str(i)})),
        ("key", lambda i: call(key=f"key-{i}")),
        # The sticky value is missing: drawn at random.
        (StickyMetadata(metadata="x-user"), lambda i: call(headers={"x-other": str(i)})),
        ("key", lambda i: call()),
    ],
    ids=["random", "sticky-metadata", "sticky-key", "metadata-missing", "no-key"],
)
def test_weighted_split_of_10000_calls_is_within_2_percent(
    sticky: str | StickyMetadata | None, nth_call: Any
) -> None:
    weighted = route(WEIGHTED_MODELS, strategy="weighted", weights=WEIGHTS, sticky=sticky)
    selection = stats()
    firsts = Counter(
        order_targets(weighted, nth_call(i), selection)[0].model for i in range(SPLIT_CALLS)
    )
    assert firsts["zero"] == 0
    for model, weight in zip(WEIGHTED_MODELS, WEIGHTS, strict=True):
        share = firsts[model] / SPLIT_CALLS
        assert abs(share - weight / sum(WEIGHTS)) <= SPLIT_TOLERANCE, (model, share)


def test_weighted_fallbacks_follow_by_descending_weight() -> None:
    # Config order differs from weight order, so the sort is observed.
    shuffled = route(("c", "zero", "a", "b"), strategy="weighted", weights=(10, 0, 70, 20))
    orders = {tuple(models(order_targets(shuffled, call(), stats(seed)))) for seed in range(200)}
    assert orders == {
        ("a", "b", "c", "zero"),
        ("b", "a", "c", "zero"),
        ("c", "a", "b", "zero"),
    }


@pytest.mark.parametrize(
    ("sticky", "nth_call"),
    [
        (StickyMetadata(metadata="x-user"), lambda i: call(headers={"x-user": f"user-{i}"})),
        ("key", lambda i: call(key=f"user-{i}")),
    ],
    ids=["metadata", "key"],
)
def test_sticky_keys_never_flip(sticky: str | StickyMetadata, nth_call: Any) -> None:
    weighted = route(("a", "b", "c"), strategy="weighted", weights=(50, 30, 20), sticky=sticky)
    # Ten calls per key, each through a differently seeded TargetStats (as on
    # ten replicas): the hash alone decides.
    seen = {
        i: {
            tuple(models(order_targets(weighted, nth_call(i), stats(seed=seed))))
            for seed in range(10)
        }
        for i in range(1000)
    }
    assert all(len(orders) == 1 for orders in seen.values())
    assert {orders.pop()[0] for orders in seen.values()} == {"a", "b", "c"}


def test_sticky_assignment_depends_on_the_route() -> None:
    """Two routes split the same users independently."""
    sticky = StickyMetadata(metadata="x-user")

    def firsts(name: str) -> list[str]:
        weighted = route(("a", "b"), strategy="weighted", sticky=sticky, name=name)
        return [
            order_targets(weighted, call(headers={"x-user": str(i)}), stats())[0].model
            for i in range(200)
        ]

    assert firsts("one") != firsts("two")


# --- least latency ---------------------------------------------------------------


def test_ewma_of_time_to_first_token() -> None:
    selection = stats(alpha=0.2)
    (target,) = targets("a")
    assert selection.ttft(target) is None
    for sample in (1.0, 0.5, 2.0):
        selection.record_ttft(target, sample)
    # 1.0, then 1.0 + 0.2 * (0.5 - 1.0) = 0.9, then 0.9 + 0.2 * (2.0 - 0.9) = 1.12
    assert selection.ttft(target) == pytest.approx(1.12)


def test_least_latency_tries_unsampled_targets_first_then_fastest() -> None:
    fastest = route(("a", "b", "c", "d"), strategy="least_latency")
    selection = stats(epsilon=0.0)
    a, b, c, d = fastest.targets
    assert models(order_targets(fastest, call(), selection)) == ["a", "b", "c", "d"]
    selection.record_ttft(b, 0.3)
    selection.record_ttft(d, 0.1)
    assert models(order_targets(fastest, call(), selection)) == ["a", "c", "d", "b"]
    selection.record_ttft(a, 0.2)
    selection.record_ttft(c, 0.05)
    assert models(order_targets(fastest, call(), selection)) == ["c", "d", "a", "b"]


def test_least_latency_explores_with_probability_epsilon() -> None:
    fastest = route(("a", "b", "c"), strategy="least_latency")
    selection = stats(epsilon=0.05)
    for target, seconds in zip(fastest.targets, (0.1, 0.2, 0.3), strict=True):
        selection.record_ttft(target, seconds)
    orders = Counter(
        tuple(models(order_targets(fastest, call(), selection))) for _ in range(SPLIT_CALLS)
    )
    # An exploring call draws any of the three first (a included): 2/3 of
    # 5% put another target first; the others keep their latency order.
    assert set(orders) == {("a", "b", "c"), ("b", "a", "c"), ("c", "a", "b")}
    explored = (orders[("b", "a", "c")] + orders[("c", "a", "b")]) / SPLIT_CALLS
    assert abs(explored - 0.05 * 2 / 3) <= 0.005


# --- lowest cost -----------------------------------------------------------------


def test_lowest_cost_orders_by_input_plus_output_price_unknown_last() -> None:
    prices = PriceTable(
        {
            "openai/cheap": Price(input=0.1, output=0.2),
            "openai/pricey": Price(input=5.0, output=1.0),
            "openai/also-cheap": Price(input=0.2, output=0.1),
        }
    )
    cheapest = route(
        ("unpriced", "pricey", "gpt-4o-mini", "cheap", "also-cheap"), strategy="lowest_cost"
    )
    # gpt-4o-mini from the shipped table: 0.15 + 0.60; ties keep config order.
    assert models(order_targets(cheapest, call(), stats(prices=prices))) == [
        "cheap",
        "also-cheap",
        "gpt-4o-mini",
        "pricey",
        "unpriced",
    ]


def test_lowest_cost_without_a_price_table_keeps_config_order() -> None:
    assert models(order_targets(route(strategy="lowest_cost"), call(), stats())) == ["a", "b", "c"]


# --- rule pins -----------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy", ["fallback", "weighted", "least_latency", "lowest_cost", "rules"]
)
def test_a_target_rule_pins_that_target_alone_under_every_strategy(strategy: Strategy) -> None:
    rules = (
        {"when": {"matches": r"\b\d{3}-\d{2}-\d{4}\b"}, "target": 2},
        {"when": {}, "target": 1},
    )
    pinned = route(strategy=strategy, rules=rules)
    assert models(order_targets(pinned, call("my SSN is 123-45-6789"), stats())) == ["c"]
    assert models(order_targets(pinned, call("hello"), stats())) == ["b"]


def test_route_rules_are_not_followed_by_selection() -> None:
    """Routing follows a route rule; on the route a rule sent the call to,
    a matching route rule gives way to the first target rule that holds."""
    rules = ({"when": {}, "route": "elsewhere"}, {"when": {"keywords": ["secret"]}, "target": 1})
    onward = route(strategy="fallback", rules=rules)
    assert models(order_targets(onward, call("a secret"), stats())) == ["b"]
    assert models(order_targets(onward, call("public"), stats())) == ["a", "b", "c"]
