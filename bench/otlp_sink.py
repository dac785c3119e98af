"""The telemetry rows' collector: a minimal OTLP/gRPC receiver (the official
TraceService, MetricsService and LogsService on grpc.aio) that accepts every
Export and counts what it got: spans (and spans by name), metric data points,
log records, and export requests per signal. It keeps nothing else.

The counts go to a JSON file (`SinkCounts`), rewritten every `--interval`
seconds while something arrives, and a last time when the process gets
SIGTERM or SIGINT, after its server stopped: the harness stops the sink after
Sluice (which flushes its exporters when it stops), then reads the file to
check that telemetry really flowed. Like redis-server and nginx it runs on
the load generator's core, so that the gateway keeps its core to itself.

Run: python -m bench.otlp_sink --port PORT --out counts.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import TypedDict

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from bench.procs import BenchError, Process, pinned, python_argv, python_env, stop_signal

# Larger than any batch the SDK sends (512 spans): a refused export would lose data.
_MAX_MESSAGE = 64 * 1024 * 1024
_Context = grpc.aio.ServicerContext[Message, Message]


class SinkCounts(TypedDict):
    spans: int
    span_names: dict[str, int]  # spans by name
    points: int  # metric data points (a histogram's point counts once)
    logs: int  # log records
    exports: dict[str, int]  # Export calls: traces, metrics, logs
    updated: float  # time.time() of the last write


class _Counter:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.spans = 0
        self.span_names: Counter[str] = Counter()
        self.points = 0
        self.logs = 0
        self.exports = {"traces": 0, "metrics": 0, "logs": 0}
        self.dirty = True  # write once at start too: an empty run reads as zeros

    def write(self) -> None:
        counts = SinkCounts(
            spans=self.spans,
            span_names=dict(self.span_names.most_common()),
            points=self.points,
            logs=self.logs,
            exports=dict(self.exports),
            updated=time.time(),
        )
        # Whole or not at all: the harness may read it at any time.
        partial = self.out.with_name(self.out.name + ".tmp")
        partial.write_text(json.dumps(counts) + "\n")
        os.replace(partial, self.out)
        self.dirty = False


def _data_points(metric: Metric) -> int:
    kind = metric.WhichOneof("data")
    if kind is None:
        return 0
    if kind == "gauge":
        return len(metric.gauge.data_points)
    if kind == "sum":
        return len(metric.sum.data_points)
    if kind == "histogram":
        return len(metric.histogram.data_points)
    if kind == "exponential_histogram":
        return len(metric.exponential_histogram.data_points)
    return len(metric.summary.data_points)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, counter: _Counter) -> None:
        self._counter = counter

    async def Export(  # noqa: N802 (gRPC method name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: _Context
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        counter = self._counter
        counter.exports["traces"] += 1
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                counter.spans += len(scope.spans)
                counter.span_names.update(span.name for span in scope.spans)
        counter.dirty = True
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, counter: _Counter) -> None:
        self._counter = counter

    async def Export(  # noqa: N802 (gRPC method name)
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: _Context
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        counter = self._counter
        counter.exports["metrics"] += 1
        counter.points += sum(
            _data_points(metric)
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        )
        counter.dirty = True
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, counter: _Counter) -> None:
        self._counter = counter

    async def Export(  # noqa: N802 (gRPC method name)
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: _Context
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        counter = self._counter
        counter.exports["logs"] += 1
        counter.logs += sum(
            len(scope.log_records)
            for resource in request.resource_logs
            for scope in resource.scope_logs
        )
        counter.dirty = True
        return logs_service_pb2.ExportLogsServiceResponse()


async def serve(host: str, port: int, out: Path, interval: float) -> None:
    counter = _Counter(out)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
        ]
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(counter), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(counter), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(counter), server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stopping = stop_signal()
    try:
        while not stopping.is_set():
            if counter.dirty:
                counter.write()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)
    finally:
        # Exports in flight finish (and count) before the last write.
        await server.stop(1.0)
        counter.write()


class OtlpSink:
    """The sink as a process of a scenario: `endpoint` for Sluice's config,
    `counts()` once it has stopped (or at any time: the file is rewritten
    whole)."""

    def __init__(self, directory: Path, port: int, cpu: int | None) -> None:
        self.port = port
        directory.mkdir(parents=True, exist_ok=True)
        self.out = directory / "counts.json"
        argv = python_argv("bench.otlp_sink", "--port", str(port), "--out", str(self.out))
        self.process = Process(
            "otlp-sink", pinned(cpu, argv), directory / "otlp-sink.log", env=python_env()
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        self.process.wait_for_port(self.port)

    def counts(self) -> SinkCounts:
        try:
            counts: SinkCounts = json.loads(self.out.read_text())
        except (OSError, ValueError) as error:
            raise BenchError(
                f"the OTLP sink left no counts ({error}):\n{self.process.tail()}"
            ) from None
        return counts


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_sink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the counts, JSON")
    parser.add_argument("--interval", type=float, default=0.5, help="s between writes (0.5)")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.out, args.interval))


if __name__ == "__main__":
    main()
