"""95% confidence intervals from counts and sums, without scipy: Wilson's
score interval for proportions, Student's t for means."""

from __future__ import annotations

import bisect
import math

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile

# Student's t 97.5% quantiles (two-sided 95%) by degrees of freedom, to 4
# decimals as printed in standard tables; between the rows past 30 the
# quantile is interpolated linearly in 1/df, which is within 1e-3 there.
_T_975_SMALL = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
# (1/df, quantile) past 30, ascending in 1/df; 1/df = 0 is the normal limit.
_T_975_LARGE = (
    (0.0, Z_95),
    (1 / 120, 1.9799),
    (1 / 60, 2.0003),
    (1 / 40, 2.0211),
    (1 / 30, 2.0423),
)


def t_quantile_975(df: int) -> float:
    """Student's t 97.5% quantile for `df` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError("t needs at least one degree of freedom")
    if df <= len(_T_975_SMALL):
        return _T_975_SMALL[df - 1]
    inverse = 1 / df
    upper = bisect.bisect_right([x for x, _ in _T_975_LARGE], inverse)
    (x0, y0), (x1, y1) = _T_975_LARGE[upper - 1], _T_975_LARGE[upper]
    return y0 + (y1 - y0) * (inverse - x0) / (x1 - x0)


def wilson_interval(successes: float, count: int) -> tuple[float, float]:
    """Wilson's 95% score interval of a proportion; (0, 1) with no data."""
    if count <= 0:
        return 0.0, 1.0
    p = successes / count
    z2 = Z_95**2
    centre = (p + z2 / (2 * count)) / (1 + z2 / count)
    half = Z_95 * math.sqrt(p * (1 - p) / count + z2 / (4 * count**2)) / (1 + z2 / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(count: int, total: float, squares: float) -> tuple[float, float, float]:
    """Mean and Student's t 95% interval from a count, sum and sum of squares;
    the interval is the mean alone below two values."""
    if count <= 0:
        return 0.0, 0.0, 0.0
    mean = total / count
    if count < 2:
        return mean, mean, mean
    # Rounding may leave a tiny negative sum of squared deviations.
    variance = max(0.0, (squares - total * total / count) / (count - 1))
    half = t_quantile_975(count - 1) * math.sqrt(variance / count)
    return mean, mean - half, mean + half
