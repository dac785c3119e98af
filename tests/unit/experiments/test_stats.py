"""Intervals against published values (Wilson 1927 / Newcombe 1998 table I;
Student's t tables)."""

from __future__ import annotations

import pytest

from sluice.experiments.stats import mean_interval, t_quantile_975, wilson_interval


@pytest.mark.parametrize(
    ("df", "quantile"),
    [(1, 12.7062), (2, 4.3027), (10, 2.2281), (30, 2.0423), (50, 2.0086), (100, 1.9840),
     (1000, 1.9623), (10**9, 1.9600)],
)  # fmt: skip
def test_t_quantile_matches_the_tables(df: int, quantile: float) -> None:
    assert t_quantile_975(df) == pytest.approx(quantile, abs=1e-3)


@pytest.mark.parametrize(
    ("successes", "count", "low", "high"),
    # Newcombe (1998), table I: 81/263, 15/148, 0/20, 1/29.
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
     (1, 29, 0.0061, 0.1718)],
)  # fmt: skip
def test_wilson_matches_newcombe(successes: int, count: int, low: float, high: float) -> None:
    assert wilson_interval(successes, count) == pytest.approx((low, high), abs=1e-4)


def test_t_interval_of_a_small_sample() -> None:
    values = [2.0, 4.0, 4.0, 5.0, 7.0]  # mean 4.4, s = 1.8166, se = 0.8124, t(4) = 2.7764
    mean, low, high = mean_interval(len(values), sum(values), sum(v * v for v in values))
    assert mean == pytest.approx(4.4)
    assert (low, high) == pytest.approx((4.4 - 2.2556, 4.4 + 2.2556), abs=1e-3)
    assert mean_interval(1, 3.0, 9.0) == (3.0, 3.0, 3.0)
