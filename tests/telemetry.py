"""Telemetry recorded in memory: the SDK's in-memory span exporter and metric
reader, and an access log written to a string."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sluice.telemetry import Telemetry
from sluice.telemetry.access_log import AccessLog
from sluice.telemetry.core import SCOPE
from sluice.telemetry.histograms import CountingReader, HistogramBook


class CountingMemoryReader(CountingReader, InMemoryMetricReader):
    """The SDK's in-memory reader, with Sluice's histograms."""


@dataclass
class Recorded:
    capture_content: bool = False
    spans: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    histograms: HistogramBook = field(default_factory=lambda: HistogramBook(SCOPE))
    metrics: InMemoryMetricReader = field(init=False)
    log: io.StringIO = field(default_factory=io.StringIO)

    def __post_init__(self) -> None:
        self.metrics = CountingMemoryReader().count(self.histograms)
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = Telemetry(
            tracer_provider,
            MeterProvider(metric_readers=[self.metrics]),
            AccessLog(logging.StreamHandler(self.log)),
            capture_content=self.capture_content,
            histograms=self.histograms,
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return [span.name for span in self.finished()]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [
            span
            for span in self.finished()
            if span.parent is not None and span.parent.span_id == parent.context.span_id
        ]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of each point of `metric`."""
        data = self.metrics.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for recorded in scope.metrics:
                    if recorded.name != metric:
                        continue
                    for point in recorded.data.data_points:
                        found.append((dict(point.attributes or {}), point))
        return found

    def total(self, metric: str, **attributes: Any) -> float:
        """The sum of a counter's points whose attributes include `attributes`
        (dots in names written as `__`)."""
        wanted = {name.replace("__", "."): value for name, value in attributes.items()}
        return sum(
            _number(value) for labels, value in self.points(metric) if _includes(labels, wanted)
        )

    def histogram(self, metric: str, **attributes: Any) -> list[HistogramDataPoint]:
        wanted = {name.replace("__", "."): value for name, value in attributes.items()}
        return [point for labels, point in self.points(metric) if _includes(labels, wanted)]

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


def _number(point: Any) -> float:
    """A sum's or a gauge's value."""
    assert isinstance(point, NumberDataPoint)
    return float(point.value)


def _includes(labels: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(labels.get(name) == value for name, value in wanted.items())
