"""Counters are counted by Sluice and read at collection: exported as the
SDK's own counters would be (a sum per attribute set, monotonic or not,
cumulative or as deltas), and safe to read while calls add to them."""

from __future__ import annotations

import sys
import threading

import pytest
from opentelemetry.sdk.metrics import MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricsData,
    NumberDataPoint,
    Sum,
)

from sluice.telemetry.call import CallObservation
from sluice.telemetry.instruments import CountedSum
from tests.telemetry import Recorded


def active_streams(recorded: Recorded) -> dict[str, float]:
    found = {}
    for attributes, point in recorded.points("sluice.active_streams"):
        found[attributes["rpc.method"]] = point.value
    return found


def test_calls_in_flight_are_counted_per_method_until_they_end() -> None:
    recorded = Recorded()
    chats = [CallObservation(recorded.telemetry, "Chat", {}) for _ in range(3)]
    embed = CallObservation(recorded.telemetry, "Embed", {})
    assert active_streams(recorded) == {"Chat": 3, "Embed": 1}

    chats[0].end(None, None)
    embed.end(None, None)
    assert active_streams(recorded) == {"Chat": 2, "Embed": 0}


def test_the_count_is_exported_as_a_non_monotonic_sum() -> None:
    recorded = Recorded()
    CallObservation(recorded.telemetry, "Chat", {})
    data = recorded.metrics.get_metrics_data()
    assert data is not None
    [metric] = [
        metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "sluice.active_streams"
    ]
    assert isinstance(metric.data, Sum)
    assert not metric.data.is_monotonic
    assert metric.unit == "{stream}"


def sums(data: MetricsData | None, name: str) -> dict[frozenset[tuple[str, object]], float]:
    assert data is not None
    return {
        frozenset((point.attributes or {}).items()): point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
        if isinstance(point, NumberDataPoint)
    }


def test_a_counter_sums_per_attribute_set_whatever_their_order() -> None:
    reader = InMemoryMetricReader()
    counter = CountedSum(
        MeterProvider(metric_readers=[reader]).get_meter("t"), "calls", unit="1", description=""
    )
    counter.add(1, {"route": "a", "status": "OK"})
    counter.add(2, {"status": "OK", "route": "a"})
    counter.add(0.5, {"route": "b", "status": "OK"})
    counter.add(1)

    assert sums(reader.get_metrics_data(), "calls") == {
        frozenset({("route", "a"), ("status", "OK")}): 3,
        frozenset({("route", "b"), ("status", "OK")}): 0.5,
        frozenset(): 1,
    }


def test_a_list_valued_attribute_counts_as_its_tuple() -> None:
    reader = InMemoryMetricReader()
    counter = CountedSum(
        MeterProvider(metric_readers=[reader]).get_meter("t"), "calls", unit="1", description=""
    )
    counter.add(1, {"stops": ["a", "b"]})
    counter.add(1, {"stops": ("a", "b")})

    assert sums(reader.get_metrics_data(), "calls") == {frozenset({("stops", ("a", "b"))}): 2}


def test_an_exporter_that_prefers_deltas_gets_deltas() -> None:
    reader = InMemoryMetricReader(
        preferred_temporality={ObservableCounter: AggregationTemporality.DELTA}
    )
    counter = CountedSum(
        MeterProvider(metric_readers=[reader]).get_meter("t"), "calls", unit="1", description=""
    )
    counter.add(3, {"route": "a"})
    assert sums(reader.get_metrics_data(), "calls") == {frozenset({("route", "a")}): 3}
    counter.add(2, {"route": "a"})
    assert sums(reader.get_metrics_data(), "calls") == {frozenset({("route", "a")}): 2}


def test_collecting_while_new_attribute_sets_are_added_is_safe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop adds new attribute sets while a reader's thread collects. A
    callback that fails is logged by the SDK and its points are missing
    from that collection."""
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: a race shows at once
    try:
        for _ in range(20):
            reader = InMemoryMetricReader()
            meter = MeterProvider(metric_readers=[reader]).get_meter("t")
            counter = CountedSum(meter, "calls", unit="1", description="")
            done = threading.Event()

            def collect(
                reader: InMemoryMetricReader = reader, done: threading.Event = done
            ) -> None:
                while not done.is_set():
                    reader.get_metrics_data()

            collector = threading.Thread(target=collect)
            collector.start()
            try:
                for key in range(1_500):  # below the SDK's 2,000 attribute sets a metric
                    counter.add(1, {"key": str(key)})
            finally:
                done.set()
                collector.join()
            counted = sums(reader.get_metrics_data(), "calls")
            assert len(counted) == 1_500
            assert sum(counted.values()) == 1_500
    finally:
        sys.setswitchinterval(switch_interval)
    assert "Callback failed" not in caplog.text
