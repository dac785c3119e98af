"""A route's experiment results from its per-minute buckets
(state/experiments.py): per variant calls, errors, time to first token,
output tokens, cost and each feedback name's mean with its 95% interval."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sluice.experiments.posterior import Arm
from sluice.experiments.stats import mean_interval, wilson_interval
from sluice.state.experiments import TTFT_BOUNDS


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    name: str
    count: int
    mean: float
    ci_low: float
    ci_high: float
    arm: Arm


@dataclass(frozen=True, slots=True)
class VariantSummary:
    name: str
    calls: int
    errors: int
    ttft_p50: float
    ttft_p95: float
    output_tokens_mean: float
    cost_per_call: float
    feedback: tuple[FeedbackSummary, ...]

    def arm(self, metric: str) -> Arm:
        """The variant's values of `metric` (none: an empty arm)."""
        found = next((item.arm for item in self.feedback if item.name == metric), None)
        return found or Arm(0, 0.0, 0.0, proportion=True)


def summarize(
    variants: Sequence[str], buckets: Iterable[Mapping[str, float]]
) -> list[VariantSummary]:
    """Each of `variants`, in order, summed over `buckets`."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for bucket in buckets:
        for key, amount in bucket.items():
            variant, _, rest = key.partition("|")
            totals[variant][rest] += amount
    return [_variant(name, totals[name]) for name in variants]


def _variant(name: str, fields: Mapping[str, float]) -> VariantSummary:
    calls = round(fields.get("calls", 0.0))
    usage_calls = fields.get("usage_calls", 0.0)
    histogram = [round(fields.get(f"ttft|{i}", 0.0)) for i in range(len(TTFT_BOUNDS) + 1)]
    return VariantSummary(
        name=name,
        calls=calls,
        errors=round(fields.get("errors", 0.0)),
        ttft_p50=_quantile(histogram, 0.5),
        ttft_p95=_quantile(histogram, 0.95),
        output_tokens_mean=fields.get("output_tokens", 0.0) / usage_calls if usage_calls else 0.0,
        cost_per_call=fields.get("cost", 0.0) / calls if calls else 0.0,
        feedback=tuple(_feedback(fields)),
    )


def _quantile(histogram: Sequence[int], q: float) -> float:
    """The upper bound of the bucket holding quantile `q` (the slowest bucket
    reads as the last bound); 0 without samples."""
    count = sum(histogram)
    if count == 0:
        return 0.0
    seen = 0
    for index, in_bucket in enumerate(histogram):
        seen += in_bucket
        if seen >= q * count:
            return TTFT_BOUNDS[min(index, len(TTFT_BOUNDS) - 1)]
    return TTFT_BOUNDS[-1]


def _feedback(fields: Mapping[str, float]) -> Iterable[FeedbackSummary]:
    names = sorted({key.split("|")[1] for key in fields if key.startswith("fb|")})
    for name in names:
        count = round(fields.get(f"fb|{name}|n", 0.0))
        if count <= 0:
            continue
        total, squares = fields.get(f"fb|{name}|sum", 0.0), fields.get(f"fb|{name}|sumsq", 0.0)
        proportion = round(fields.get(f"fb|{name}|bools", 0.0)) == count
        if proportion:
            total = round(total)  # a count of trues, whatever float sums left
            low, high = wilson_interval(total, count)
            mean = total / count
        else:
            mean, low, high = mean_interval(count, total, squares)
        yield FeedbackSummary(name, count, mean, low, high, Arm(count, total, squares, proportion))
