"""Which variant is best on a metric, and how sure: the probability, under
each variant's posterior, that its mean is the best of all. A proportion's
posterior is Beta(1 + successes, 1 + failures); a mean's is normal with the
sample's standard error. Estimated by drawing from each posterior (a fixed
number of draws from the given source, so a seeded source repeats itself)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Goal = Literal["maximize", "minimize"]
DRAWS = 2000


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant's values of a metric: their count, sum and sum of
    squares; `proportion` when every value was a bool."""

    count: int
    total: float
    squares: float
    proportion: bool

    def draw(self, rng: random.Random) -> float:
        if self.proportion:
            return rng.betavariate(1 + self.total, 1 + self.count - self.total)
        mean = self.total / self.count
        variance = max(0.0, (self.squares - self.total * mean) / max(1, self.count - 1))
        return rng.gauss(mean, math.sqrt(variance / self.count))


def win_probabilities(
    arms: Mapping[str, Arm], goal: Goal, rng: random.Random, draws: int = DRAWS
) -> dict[str, float]:
    """Each arm's probability of being the best (arms without values: 0)."""
    sampled = [name for name, arm in arms.items() if arm.count > 0]
    wins = dict.fromkeys(arms, 0)
    if not sampled:
        return {name: 0.0 for name in arms}
    pick = max if goal == "maximize" else min
    for _ in range(draws):
        values = {name: arms[name].draw(rng) for name in sampled}
        wins[pick(values, key=values.__getitem__)] += 1
    return {name: count / draws for name, count in wins.items()}


def leader(probabilities: Mapping[str, float]) -> tuple[str, float]:
    """The most probable best arm and its probability; ("", 0) when none."""
    best: Sequence[tuple[str, float]] = sorted(probabilities.items(), key=lambda item: -item[1])
    if not best or best[0][1] == 0:
        return "", 0.0
    return best[0]
