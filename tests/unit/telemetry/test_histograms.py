"""Sluice's own histograms export what the SDK's histogram exports for the
same measurements: same buckets, count, sum, min, max, attribute sets,
temporality and cardinality bound, to in-memory, periodic and Prometheus
readers alike."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter, Observation
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest

from sluice.telemetry.histograms import (
    CARDINALITY_LIMIT,
    CountedHistogram,
    CountingPrometheusReader,
    HistogramBook,
)
from tests.telemetry import CountingMemoryReader

BOUNDS = [0.0, 0.5, 1.0, 10.0]
SCOPE = InstrumentationScope("t", "1")
DELTA: dict[type, AggregationTemporality] = {Histogram: AggregationTemporality.DELTA}
Points = dict[frozenset[tuple[str, Any]], dict[str, Any]]


class Pair:
    """The same histogram twice: the SDK's, read by `sdk_reader`, and
    Sluice's, read by `reader` (each through a meter provider of its own)."""

    def __init__(self, sdk_reader: MetricReader, reader: MetricReader, book: HistogramBook) -> None:
        self.sdk_meter = MeterProvider(metric_readers=[sdk_reader]).get_meter("t", "1")
        self.meter = MeterProvider(metric_readers=[reader]).get_meter("t", "1")
        self.sdk = self.sdk_meter.create_histogram(
            "h", unit="s", description="d", explicit_bucket_boundaries_advisory=BOUNDS
        )
        self.ours = book.histogram("h", unit="s", description="d", bounds=BOUNDS)
        # A reader receives a collection only when the SDK has a point of its
        # own to give (Sluice always has: its config gauge).
        for meter in (self.sdk_meter, self.meter):
            _config_gauge(meter)

    def record(self, value: float, attributes: dict[str, Any] | None = None) -> None:
        self.sdk.record(value, attributes)
        self.ours.record(value, attributes)


def _config_gauge(meter: Meter) -> None:
    meter.create_observable_gauge("g", callbacks=[lambda options: [Observation(1)]])


def in_memory(
    temporality: dict[type, AggregationTemporality] | None = None,
) -> tuple[InMemoryMetricReader, InMemoryMetricReader, Pair]:
    book = HistogramBook(SCOPE)
    sdk_reader = InMemoryMetricReader(preferred_temporality=temporality)
    reader = CountingMemoryReader(preferred_temporality=temporality).count(book)
    return sdk_reader, reader, Pair(sdk_reader, reader, book)


def points(data: MetricsData | None) -> tuple[AggregationTemporality | None, Points]:
    """Histogram `h`'s temporality, and its points by attribute set without
    their timestamps."""
    assert data is not None
    temporality = None
    found: Points = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "h":
                    continue
                assert (scope.scope.name, scope.scope.version) == ("t", "1")
                assert (metric.unit, metric.description) == ("s", "d")
                assert isinstance(metric.data, HistogramData)
                temporality = metric.data.aggregation_temporality
                for point in metric.data.data_points:
                    assert isinstance(point, HistogramDataPoint)
                    found[frozenset((point.attributes or {}).items())] = {
                        "count": point.count,
                        # Sums of many floats differ in the last digits with their order.
                        "sum": float(f"{point.sum:.12g}"),
                        "buckets": list(point.bucket_counts),
                        "bounds": list(point.explicit_bounds),
                        "min": point.min,
                        "max": point.max,
                    }
    return temporality, found


def measurements(count: int, seed: int) -> Iterator[tuple[float, dict[str, Any]]]:
    """Values on and around every bound, negative and large, ints and floats,
    over a few attribute sets given in any key order."""
    chooser = random.Random(seed)
    values = [*BOUNDS, -1, 0, 1, 3, 100, 1e9, 0.25, 0.5000001, 9.999]
    for _ in range(count):
        route = chooser.choice(["a", "b"])
        sets: list[dict[str, Any]] = [
            {"route": route, "ok": True},
            {"ok": True, "route": route},
            {"n": 7},
            {},
        ]
        attributes = chooser.choice(sets)
        yield chooser.choice(values), attributes


@pytest.mark.filterwarnings("ignore")
def test_cumulative_points_are_the_sdks() -> None:
    sdk_reader, reader, pair = in_memory()
    for value, attributes in measurements(500, seed=1):
        pair.record(value, attributes)
    first = points(reader.get_metrics_data())
    assert first == points(sdk_reader.get_metrics_data())
    assert first[0] is AggregationTemporality.CUMULATIVE

    for value, attributes in measurements(300, seed=2):
        pair.record(value, attributes)
    assert points(reader.get_metrics_data()) == points(sdk_reader.get_metrics_data())


def test_a_reader_that_prefers_deltas_gets_each_interval_alone() -> None:
    sdk_reader, reader, pair = in_memory(DELTA)
    for seed in range(3):
        for value, attributes in measurements(200, seed=seed):
            pair.record(value, attributes)
        ours = points(reader.get_metrics_data())
        assert ours == points(sdk_reader.get_metrics_data())
        assert ours[0] is AggregationTemporality.DELTA
    pair.record(5.0, {"route": "a"})
    assert set(points(reader.get_metrics_data())[1]) == {frozenset({("route", "a")})}


def test_delta_and_cumulative_readers_of_one_book_do_not_disturb_each_other() -> None:
    book = HistogramBook(SCOPE)
    cumulative = CountingMemoryReader().count(book)
    delta = CountingMemoryReader(preferred_temporality=DELTA).count(book)
    meter = MeterProvider(metric_readers=[cumulative, delta]).get_meter("t", "1")
    _config_gauge(meter)
    histogram = book.histogram("h", unit="s", description="d", bounds=BOUNDS)

    histogram.record(1.0)
    assert points(delta.get_metrics_data())[1][frozenset()]["count"] == 1
    histogram.record(2.0)
    assert points(delta.get_metrics_data())[1][frozenset()]["count"] == 1
    assert points(cumulative.get_metrics_data())[1][frozenset()]["count"] == 2
    assert points(cumulative.get_metrics_data())[1][frozenset()]["count"] == 2


def test_attribute_sets_beyond_the_bound_go_to_one_overflow_point() -> None:
    sdk_reader, reader, pair = in_memory()
    for key in range(CARDINALITY_LIMIT + 25):
        pair.record(float(key % 7), {"key": key})
    ours = points(reader.get_metrics_data())
    assert ours == points(sdk_reader.get_metrics_data())
    overflow = ours[1][frozenset({("otel.metric.overflow", True)})]
    assert overflow["count"] == 25
    assert len(ours[1]) == CARDINALITY_LIMIT + 1


def test_histograms_join_the_scope_the_sdk_reports_or_a_scope_of_their_own() -> None:
    book = HistogramBook(SCOPE)
    reader = CountingMemoryReader().count(book)
    other_meter = MeterProvider(metric_readers=[reader]).get_meter("other")
    _config_gauge(other_meter)
    book.histogram("h", unit="s", description="d", bounds=BOUNDS).record(1.0)

    data = reader.get_metrics_data()
    assert data is not None
    [resource] = data.resource_metrics
    assert {
        scope.scope.name: [m.name for m in scope.metrics] for scope in resource.scope_metrics
    } == {
        "other": ["g"],
        "t": ["h"],
    }


def test_the_prometheus_endpoint_shows_the_sdks_text() -> None:
    sdk_registry, registry = CollectorRegistry(), CollectorRegistry()
    book = HistogramBook(SCOPE)
    pair = Pair(
        PrometheusMetricReader(registry=sdk_registry),
        CountingPrometheusReader(registry=registry).count(book),
        book,
    )
    for value, attributes in measurements(300, seed=3):
        pair.record(value, attributes)
    lines = sorted(generate_latest(registry).decode().splitlines())  # families in any order
    assert any(line.startswith("h_seconds_bucket{") for line in lines)
    assert lines == sorted(generate_latest(sdk_registry).decode().splitlines())


def test_recording_while_a_reader_collects_loses_nothing() -> None:
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: a race shows at once
    try:
        book = HistogramBook(SCOPE)
        reader = CountingMemoryReader(preferred_temporality=DELTA).count(book)
        _config_gauge(MeterProvider(metric_readers=[reader]).get_meter("t", "1"))
        histogram: CountedHistogram = book.histogram("h", unit="s", description="d", bounds=BOUNDS)
        collected: list[Points] = []
        done = threading.Event()

        def collect() -> None:
            while not done.is_set():
                collected.append(points(reader.get_metrics_data())[1])

        collector = threading.Thread(target=collect)
        collector.start()
        try:
            for key in range(20_000):
                histogram.record(0.75, {"key": str(key % 50)})
        finally:
            done.set()
            collector.join()
        collected.append(points(reader.get_metrics_data())[1])
        cells = [cell for found in collected for cell in found.values()]
        assert sum(cell["count"] for cell in cells) == 20_000
        assert all(cell["count"] == sum(cell["buckets"]) for cell in cells)
        assert sum(cell["sum"] for cell in cells) == pytest.approx(0.75 * 20_000)
    finally:
        sys.setswitchinterval(switch_interval)


def test_a_delta_point_starts_where_the_previous_collection_ended() -> None:
    book = HistogramBook(SCOPE)
    delta = CountingMemoryReader(preferred_temporality=DELTA).count(book)
    cumulative = CountingMemoryReader().count(book)
    _config_gauge(MeterProvider(metric_readers=[delta, cumulative]).get_meter("t", "1"))
    histogram = book.histogram("h", unit="s", description="d", bounds=BOUNDS)

    def point(reader: InMemoryMetricReader) -> HistogramDataPoint:
        histogram.record(1.0)
        [found] = [
            point
            for resource in (reader.get_metrics_data() or MetricsData([])).resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "h"
            for point in metric.data.data_points
        ]
        assert isinstance(found, HistogramDataPoint)
        assert found.start_time_unix_nano <= found.time_unix_nano
        return found

    first, second = point(delta), point(delta)
    assert second.start_time_unix_nano >= first.time_unix_nano
    first, second = point(cumulative), point(cumulative)
    assert second.start_time_unix_nano == first.start_time_unix_nano
    assert second.time_unix_nano > first.time_unix_nano


def test_a_list_valued_attribute_is_kept_as_the_sdk_keeps_it() -> None:
    sdk_reader, reader, pair = in_memory()
    pair.record(1.0, {"stops": ["a", "b"], "route": "r"})
    pair.record(2.0, {"route": "r", "stops": ("a", "b")})
    ours = points(reader.get_metrics_data())
    assert ours == points(sdk_reader.get_metrics_data())
    assert ours[1][frozenset({("stops", ("a", "b")), ("route", "r")})]["count"] == 2


def test_a_delta_reader_given_nothing_to_join_keeps_its_points_for_the_next() -> None:
    book = HistogramBook(SCOPE)
    reader = CountingMemoryReader(preferred_temporality=DELTA).count(book)
    _config_gauge(MeterProvider(metric_readers=[reader]).get_meter("t", "1"))
    histogram = book.histogram("h", unit="s", description="d", bounds=BOUNDS)
    histogram.record(1.0)

    reader._receive_metrics(MetricsData(resource_metrics=[]))  # no resource to join to
    assert points(reader.get_metrics_data())[1][frozenset()]["count"] == 1
