"""Every metric Sluice records: the OpenTelemetry GenAI ones and Sluice's own.

GenAI metrics follow the semantic conventions, with their recommended bucket
boundaries: the `gen_ai.client.*` ones describe Sluice's calls to upstream
providers (one per attempt), the `gen_ai.server.*` ones the calls Sluice
answers (one per call, cache hits included). Sluice's own carry
`sluice.route` and, where a key is known, `sluice.key.name`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.util.types import AttributeValue

from sluice.telemetry.histograms import AttributeKey, HistogramBook, attribute_key

_TOKEN_BUCKETS = [4.0**power for power in range(14)]  # 1, 4, 16 ... 67108864
_DURATION_BUCKETS = [0.01 * 2**power for power in range(14)]  # 0.01 ... 81.92 s
_FIRST_TOKEN_BUCKETS = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
]  # fmt: skip
# What the SDK uses for a histogram that advises none.
_SDK_DEFAULT_BUCKETS = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
]  # fmt: skip
_OVERHEAD_BUCKETS = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
]  # fmt: skip


class CountedSum:
    """A counter (or, not `monotonic`, an up-down counter) whose `add` is a
    dict update, read by the SDK at collection as an observable instrument.
    The SDK's synchronous counter costs about 10 µs a measurement under
    load, and Sluice adds to some on every call. The export is the same: a
    sum per attribute set, cumulative (the SDK derives deltas for an
    exporter that prefers them)."""

    def __init__(
        self,
        meter: metrics.Meter,
        name: str,
        *,
        unit: str,
        description: str,
        monotonic: bool = True,
    ) -> None:
        self._sums: dict[AttributeKey, float] = {}
        create = (
            meter.create_observable_counter
            if monotonic
            else meter.create_observable_up_down_counter
        )
        create(name, callbacks=[self._observe], unit=unit, description=description)

    def add(self, amount: float, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        key = attribute_key(attributes)
        self._sums[key] = self._sums.get(key, 0) + amount

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # A copy, taken whole: the loop adds while a reader's thread collects.
        return [Observation(total, dict(key)) for key, total in self._sums.copy().items()]


class Instruments:
    def __init__(self, meter: metrics.Meter, histograms: HistogramBook) -> None:
        # --- GenAI, upstream calls (per attempt) ---------------------------------------
        self.token_usage = histograms.histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per upstream call, by gen_ai.token.type",
            bounds=_TOKEN_BUCKETS,
        )
        self.operation_duration = histograms.histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of upstream calls, to their last chunk",
            bounds=_DURATION_BUCKETS,
        )
        self.upstream_first_chunk = histograms.histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time from sending an upstream request to its first answer chunk",
            bounds=_FIRST_TOKEN_BUCKETS,
        )
        # --- GenAI, calls Sluice answers (per call) -------------------------------------
        self.request_duration = histograms.histogram(
            "gen_ai.server.request.duration",
            unit="s",
            description="Duration of calls to Sluice, to their last chunk",
            bounds=_DURATION_BUCKETS,
        )
        self.time_to_first_token = histograms.histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            description="Time from a call's arrival to its first answer chunk leaving Sluice",
            bounds=_FIRST_TOKEN_BUCKETS,
        )
        # --- Sluice ------------------------------------------------------------------
        self.requests = CountedSum(
            meter,
            "sluice.requests",
            unit="{request}",
            description="Calls answered, by route, method and gRPC status",
        )
        self.active_streams = CountedSum(
            meter,
            "sluice.active_streams",
            unit="{stream}",
            description="Calls in flight",
            monotonic=False,
        )
        self.cache_lookups = CountedSum(
            meter,
            "sluice.cache.lookups",
            unit="{lookup}",
            description="Response cache lookups, by sluice.cache.kind (exact, semantic) and "
            "sluice.cache.result (hit, miss, error)",
        )
        self.limit_refusals = CountedSum(
            meter,
            "sluice.limit.refusals",
            unit="{call}",
            description="Calls refused by a rate limit, quota, budget or concurrency limit",
        )
        self.retries = CountedSum(
            meter,
            "sluice.upstream.retries",
            unit="{attempt}",
            description="Attempts that retried the same target after a failure",
        )
        self.fallbacks = CountedSum(
            meter,
            "sluice.upstream.fallbacks",
            unit="{attempt}",
            description="Attempts that moved on to the next target after a failure",
        )
        self.shadow_calls = CountedSum(
            meter,
            "sluice.shadow.calls",
            unit="{call}",
            description="Mirrored calls, by sluice.shadow.outcome",
        )
        self.cost = CountedSum(
            meter,
            "sluice.cost",
            unit="USD",
            description="Estimated cost of upstream usage at the price table, by route and key",
        )
        self.overhead = histograms.histogram(
            "sluice.gateway.overhead",
            unit="s",
            description="Time a call spent in Sluice itself: its duration less upstream waits "
            "and retry backoff",
            bounds=_OVERHEAD_BUCKETS,
        )
        self.config_reloads = CountedSum(
            meter,
            "sluice.config.reloads",
            unit="{reload}",
            description="Config reloads, by outcome (success, unchanged, invalid, timeout, error)",
        )
        self.feedback = histograms.histogram(
            "sluice.feedback",
            unit="1",
            description="Feedback values by route, variant and sluice.feedback.name "
            "(a bool counts 1 or 0; text values are not recorded)",
            bounds=_SDK_DEFAULT_BUCKETS,
        )
        self._traffic: Callable[[], Mapping[str, Mapping[str, float]]] | None = None
        meter.create_observable_gauge(
            "sluice.experiment.traffic_share",
            callbacks=[self._observe_traffic],
            unit="1",
            description="Share of new calls each variant of a strategy: experiment route gets",
        )
        self._config_digest: str | None = None
        meter.create_observable_gauge(
            "sluice.config.hash",
            callbacks=[self._observe_config],
            unit="1",
            description="1, with the SHA-256 of the serving config file as sluice.config.hash",
        )
        self._circuits: Callable[[], Iterable[tuple[int, Mapping[str, str | int]]]] | None = None
        meter.create_observable_gauge(
            "sluice.circuit.state",
            callbacks=[self._observe_circuits],
            unit="1",
            description="Circuit breaker state per route target: 0 closed, 1 half-open, 2 open",
        )

    def serving_config(self, digest: str) -> None:
        """The config file now serving has this SHA-256 (hex)."""
        self._config_digest = digest

    def _observe_config(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._config_digest is None:
            return []
        return [Observation(1, {"sluice.config.hash": self._config_digest})]

    def observe_circuits(
        self, source: Callable[[], Iterable[tuple[int, Mapping[str, str | int]]]]
    ) -> None:
        """Report circuit states from `source` (state, attributes) from now on:
        each new gateway points this at its routes."""
        self._circuits = source

    def observe_traffic(self, source: Callable[[], Mapping[str, Mapping[str, float]]]) -> None:
        """Report experiment splits (route -> variant -> share) from `source`."""
        self._traffic = source

    def _observe_traffic(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._traffic is None:
            return []
        return [
            Observation(share, {"sluice.route": route, "sluice.variant": variant})
            for route, shares in self._traffic().items()
            for variant, share in shares.items()
        ]

    def _observe_circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._circuits is None:
            return []
        return [Observation(state, attributes) for state, attributes in self._circuits()]
