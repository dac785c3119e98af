"""A telemetry row fails unless the sink got what its signals make: spans
always, metric points when metrics are exported, a log record a call when
logs are."""

from __future__ import annotations

import pytest

from bench.otlp_sink import SinkCounts
from bench.procs import BenchError
from bench.scenarios import _check_telemetry
from tests.bench.outcomes import outcome

CALLS = 100


def checked(name: str, *, spans: int, points: int, logs: int) -> None:
    row = outcome(name, requests=CALLS, cpu_seconds=0.1)
    row.telemetry = SinkCounts(
        spans=spans, span_names={}, points=points, logs=logs, exports={}, updated=0.0
    )
    _check_telemetry(row)


@pytest.mark.parametrize("name", ["sluice-traced", "sluice-metered", "sluice-otel"])
def test_too_few_spans_fail_every_telemetry_row(name: str) -> None:
    with pytest.raises(BenchError, match="spans"):
        checked(name, spans=2 * CALLS, points=10, logs=CALLS)


def test_the_metered_row_needs_metric_points_and_no_log_records() -> None:
    checked("sluice-metered", spans=4 * CALLS, points=10, logs=0)
    with pytest.raises(BenchError, match="no metric points"):
        checked("sluice-metered", spans=4 * CALLS, points=0, logs=0)


def test_the_otel_row_needs_a_log_record_a_call() -> None:
    checked("sluice-otel", spans=4 * CALLS, points=10, logs=CALLS)
    with pytest.raises(BenchError, match="log records"):
        checked("sluice-otel", spans=4 * CALLS, points=10, logs=CALLS - 1)


def test_the_traced_row_needs_only_spans() -> None:
    checked("sluice-traced", spans=4 * CALLS, points=0, logs=0)
