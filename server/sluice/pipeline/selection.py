"""Target selection: the order in which a call tries its route's targets.

`order_targets` returns every target the call may use, first choice first;
the attempts endpoint tries them in that order, each later one a fallback.

- `fallback`: the config's order.
- `weighted`: the first target is drawn in proportion to the weights (a
  target of weight 0 is never drawn), the others follow by descending weight,
  ties in config order. With `sticky`, the draw is not random but a hash of
  the route's name and the caller's key name (`sticky: key`) or a request
  metadata value (`sticky: {metadata: k}`), so one user sees one variant on
  every replica for as long as the route's weights stay the same. A call
  without that value is drawn at random.
- `least_latency`: by the EWMA of each target's time to first token
  (`TargetStats`, weight `alpha` to the newest sample), fastest first.
  Estimates only change when a target is called, so two kinds of calls
  explore: targets without a sample go first (config order), and with
  probability `epsilon` a call puts a uniformly drawn target first, so a
  target that was slow once is tried again and its estimate refreshed.
- `lowest_cost`: by input + output price per million tokens in
  `TargetStats.prices`, cheapest first; targets without a known price last.
- `rules`: the config's order when no rule matches.
- `experiment`: like `weighted`, on the split `TrafficSplit` keeps
  (experiments/traffic.py): the weights until feedback decides, then shifted
  towards the better variant. With `sticky`, one user keeps one variant for
  as long as the split stays the same.

A matching rule with `target: i` (rules.py) overrides every strategy and
returns that target alone, with no fallback: rules such as "prompts that
match a PII pattern go to the local model" must never spill over to another
target when that one fails.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections.abc import Callable, Mapping

from sluice.config.schema import StickyMetadata, Strategy
from sluice.experiments.traffic import TrafficSplit
from sluice.pipeline.call import Call
from sluice.pipeline.rules import match_rule
from sluice.pricing import PriceTable
from sluice.routes import Route, Target

DEFAULT_ALPHA = 0.2
DEFAULT_EPSILON = 0.05


class TargetStats:
    """What selection learns and knows about targets, shared by all calls of
    a gateway: time-to-first-token estimates, the price table, and the source
    of random draws (seed it in tests).

    Estimates are keyed by `Target`; a reload builds new targets, so build a
    new `TargetStats` with the new route table (estimates start afresh)."""

    def __init__(
        self,
        prices: PriceTable | None = None,
        *,
        alpha: float = DEFAULT_ALPHA,
        epsilon: float = DEFAULT_EPSILON,
        rng: random.Random | None = None,
        traffic: TrafficSplit | None = None,
    ) -> None:
        self.prices = prices
        self.traffic = traffic
        self.alpha = alpha
        self.epsilon = epsilon
        self.rng = rng or random.Random()
        self._ttft: dict[Target, float] = {}

    def record_ttft(self, target: Target, seconds: float) -> None:
        """Fold one time-to-first-token sample into the target's estimate."""
        estimate = self._ttft.get(target)
        self._ttft[target] = (
            seconds if estimate is None else estimate + self.alpha * (seconds - estimate)
        )

    def ttft(self, target: Target) -> float | None:
        """The target's estimated seconds to first token; None before any sample."""
        return self._ttft.get(target)


def order_targets(route: Route, call: Call, stats: TargetStats) -> list[Target]:
    """The targets `call` tries, in order."""
    rule = match_rule(route, call, redirects=False)
    if rule is not None and rule.target is not None:
        return [route.targets[rule.target]]
    return _STRATEGIES[route.strategy](route, call, stats)


def _in_config_order(route: Route, call: Call, stats: TargetStats) -> list[Target]:
    return list(route.targets)


def _weighted(route: Route, call: Call, stats: TargetStats) -> list[Target]:
    return _drawn(route, call, stats, [float(target.weight) for target in route.targets])


def _experiment(route: Route, call: Call, stats: TargetStats) -> list[Target]:
    assert stats.traffic is not None, "a gateway with experiment routes keeps their split"
    shares = stats.traffic.shares(route)
    return _drawn(route, call, stats, [shares[target.variant] for target in route.targets])


def _drawn(route: Route, call: Call, stats: TargetStats, weights: list[float]) -> list[Target]:
    """The first target drawn in proportion to `weights`, the others by
    descending weight."""
    targets = route.targets
    bounds = list(itertools.accumulate(weights))
    key = sticky_value(route, call)
    if key is None:
        fraction = stats.rng.random()
    else:
        digest = hashlib.blake2b(f"{route.name}\0{key}".encode(), digest_size=8).digest()
        fraction = int.from_bytes(digest, "big") / 2**64
    # The first bound above the point; a weight-0 target never owns a point.
    index = min(bisect.bisect_right(bounds, fraction * bounds[-1]), len(targets) - 1)
    first = targets[index]
    rest = sorted((t for t in targets if t is not first), key=lambda t: -weights[targets.index(t)])
    return [first, *rest]


def sticky_value(route: Route, call: Call) -> str | None:
    sticky = route.sticky
    if isinstance(sticky, StickyMetadata):
        return call.headers.get(sticky.metadata.lower()) or None
    if sticky == "key" and call.caller is not None:
        return call.caller.name
    return None


def _least_latency(route: Route, call: Call, stats: TargetStats) -> list[Target]:
    estimates = [(stats.ttft(target), target) for target in route.targets]
    unsampled = [target for estimate, target in estimates if estimate is None]
    sampled = sorted(
        ((estimate, target) for estimate, target in estimates if estimate is not None),
        key=lambda pair: pair[0],
    )
    order = unsampled + [target for _, target in sampled]
    if len(order) > 1 and stats.rng.random() < stats.epsilon:
        order.insert(0, order.pop(stats.rng.randrange(len(order))))
    return order


def _lowest_cost(route: Route, call: Call, stats: TargetStats) -> list[Target]:
    prices = stats.prices

    def cost(target: Target) -> float:
        price = prices.price(target.provider, target.model) if prices is not None else None
        return math.inf if price is None else price.input + price.output

    return sorted(route.targets, key=cost)


_STRATEGIES: Mapping[Strategy, Callable[[Route, Call, TargetStats], list[Target]]] = {
    "fallback": _in_config_order,
    "rules": _in_config_order,
    "weighted": _weighted,
    "least_latency": _least_latency,
    "lowest_cost": _lowest_cost,
    "experiment": _experiment,
}
