"""Histograms aggregated by Sluice, handed to the SDK's metric readers at
collection.

The SDK's `Histogram.record` costs 9-15 µs a measurement (it cleans and
sorts the attribute set, builds a `Measurement`, takes its locks) and Sluice
records seven a call. Here a measurement is a bucket search and a few
additions to a cell found by its attribute set (about 1 µs). A
`CountingReader` given the `HistogramBook` adds the points to every
collection it receives, so exporters and the Prometheus endpoint get what
the SDK would have produced: explicit buckets (bucket `i` holds the values
in `(bounds[i-1], bounds[i]]`), count, sum, min and max, cumulative or delta
as the reader asks, and the SDK's default cardinality bound (2,000
attribute sets a histogram, then one `otel.metric.overflow` point). No
exemplars: Sluice records outside any current span, where the SDK's default
filter keeps none either.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Self

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics._internal.instrument import _Histogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import AttributeValue

from sluice.log_throttle import ThrottledLog

_dropped = ThrottledLog(logging.getLogger(__name__))

# The SDK's default bound on the attribute sets of one instrument.
CARDINALITY_LIMIT = 2000

AttributeKey = frozenset[tuple[str, AttributeValue]]
_OVERFLOW: AttributeKey = frozenset({("otel.metric.overflow", True)})
_NO_ATTRIBUTES: AttributeKey = frozenset()
# A cell is one list, so that a collection copies it whole under the lock:
# [count, sum, min, max, start (ns), bucket counts...].
_Cell = list[Any]
_FIRST_BUCKET = 5


def attribute_key(attributes: Mapping[str, AttributeValue] | None) -> AttributeKey:
    """The key of an attribute set, whatever the order of its items."""
    if not attributes:
        return _NO_ATTRIBUTES
    try:
        return frozenset(attributes.items())
    except TypeError:  # a list value: kept as a tuple, as the SDK keeps it
        return frozenset(
            (name, tuple(value) if isinstance(value, list) else value)
            for name, value in attributes.items()
        )


class CountedHistogram:
    """One histogram. `record` may be called from any thread."""

    def __init__(
        self, book: HistogramBook, name: str, unit: str, description: str, bounds: Sequence[float]
    ) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = list(bounds)
        self._lock = book.lock
        # A table of cells per slot of the book: the cumulative one, and one
        # per delta reader, emptied at each of its collections.
        self.tables: list[dict[AttributeKey, _Cell]] = [{} for _ in range(book.slots)]

    def record(self, value: float, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        if value < 0:  # as the SDK: a histogram's measurements are never negative
            _dropped.report(self.name, "negative measurement dropped from histogram %s", self.name)
            return
        key = attribute_key(attributes)
        bucket = _FIRST_BUCKET + bisect_left(self.bounds, value)
        with self._lock:
            for table in self.tables:
                cell = table.get(key) or self._new_cell(table, key)
                cell[0] += 1
                cell[1] += value
                cell[2] = min(cell[2], value)
                cell[3] = max(cell[3], value)
                cell[bucket] += 1

    def _new_cell(self, table: dict[AttributeKey, _Cell], key: AttributeKey) -> _Cell:
        if len(table) >= CARDINALITY_LIMIT:
            key = _OVERFLOW
            if (cell := table.get(key)) is not None:
                return cell
        cell = [0, 0, float("inf"), float("-inf"), time.time_ns(), *([0] * (len(self.bounds) + 1))]
        table[key] = cell
        return cell

    def metric(
        self,
        cells: list[tuple[AttributeKey, _Cell]],
        temporality: AggregationTemporality,
        since: int,
    ) -> Metric:
        """`cells` as the SDK's points; a delta point starts at `since`."""
        now = time.time_ns()
        cumulative = temporality is AggregationTemporality.CUMULATIVE
        points = [
            HistogramDataPoint(
                attributes=dict(key),
                start_time_unix_nano=cell[4] if cumulative else since,
                time_unix_nano=now,
                count=cell[0],
                sum=cell[1],
                bucket_counts=cell[_FIRST_BUCKET:],
                explicit_bounds=self.bounds,
                min=cell[2],
                max=cell[3],
            )
            for key, cell in cells
        ]
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(data_points=points, aggregation_temporality=temporality),
        )


class HistogramBook:
    """Every histogram Sluice records under one instrumentation scope. All
    cumulative readers share one slot; each delta reader has its own."""

    def __init__(self, scope: InstrumentationScope) -> None:
        self.scope = scope
        self.lock = threading.Lock()
        self.slots = 0
        self._cumulative_slot: int | None = None
        self._histograms: list[CountedHistogram] = []

    def histogram(
        self, name: str, *, unit: str, description: str, bounds: Sequence[float]
    ) -> CountedHistogram:
        histogram = CountedHistogram(self, name, unit, description, bounds)
        self._histograms.append(histogram)
        return histogram

    def collector(self, temporality: AggregationTemporality) -> Callable[[], list[Metric]]:
        """What one reader takes at each of its collections."""
        delta = temporality is AggregationTemporality.DELTA
        slot = self._cumulative_slot if not delta else None
        if slot is None:
            slot = self._add_slot()
            if not delta:
                self._cumulative_slot = slot
        since = time.time_ns()

        def collect() -> list[Metric]:
            nonlocal since
            collected = []
            for histogram in self._histograms:
                with self.lock:
                    if delta:
                        table, histogram.tables[slot] = histogram.tables[slot], {}
                        cells = list(table.items())
                    else:
                        cells = [(key, cell.copy()) for key, cell in histogram.tables[slot].items()]
                if cells:
                    collected.append(histogram.metric(cells, temporality, since))
            since = time.time_ns()
            return collected

        return collect

    def _add_slot(self) -> int:
        with self.lock:
            for histogram in self._histograms:
                histogram.tables.append({})
            self.slots += 1
            return self.slots - 1


class CountingReader(MetricReader):
    """A metric reader whose collections carry a `HistogramBook`'s points,
    in the temporality the reader asks of histograms. Mixed in before the
    SDK reader it extends."""

    # Adds the book's points to a collection; None until `count`.
    _join: Callable[[MetricsData], MetricsData] | None = None

    def count(self, book: HistogramBook) -> Self:
        """Read `book` too, from now on."""
        # The reader's own choice for histograms, made from its exporter's
        # preference when it was built.
        collect = book.collector(self._instrument_class_temporality[_Histogram])
        self._join = lambda data: _joined(data, book.scope, collect())
        return self

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        # Collected only into data that has a resource: a delta collection
        # empties the tables it reads.
        if self._join is not None and metrics_data.resource_metrics:
            metrics_data = self._join(metrics_data)
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)  # type: ignore[safe-super]  # mixed in before a concrete reader


class CountingPeriodicReader(CountingReader, PeriodicExportingMetricReader):
    """`PeriodicExportingMetricReader` with Sluice's histograms."""


class CountingPrometheusReader(CountingReader, PrometheusMetricReader):
    """`PrometheusMetricReader` with Sluice's histograms."""


def _joined(data: MetricsData, scope: InstrumentationScope, metrics: list[Metric]) -> MetricsData:
    """`data` with `metrics` in `scope`'s metrics (one meter provider: one resource)."""
    if not metrics:
        return data
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for index, scoped in enumerate(scopes):
        if scoped.scope == scope:
            scopes[index] = replace(scoped, metrics=[*scoped.metrics, *metrics])
            break
    else:
        scopes.append(ScopeMetrics(scope=scope, metrics=metrics, schema_url=scope.schema_url or ""))
    return replace(data, resource_metrics=[replace(first, scope_metrics=scopes), *rest])
