"""Streams in flight are counted by Sluice and read at collection, as the
up-down sum `sluice.active_streams` per method."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import Sum

from sluice.telemetry.call import CallObservation
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
