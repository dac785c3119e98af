"""Real OTLP receivers on free loopback ports, for tests: gRPC (the official
collector services on a grpc.aio server) and HTTP/protobuf (POST
/v1/traces, /v1/metrics, /v1/logs on a thread). Each keeps every export
request and the headers it came with, and flattens what it got into plain
values to assert on.

    async with OtlpGrpcReceiver() as receiver:
        ...export to receiver.endpoint...
        spans = await receiver.wait_for_spans()
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

WAIT_TIMEOUT = 10.0  # seconds
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER
    trace_id: str  # hex, as in a traceparent header
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, object]
    status: str  # UNSET, OK, ERROR
    resource: dict[str, object]


@dataclass(frozen=True, slots=True)
class ReceivedPoint:
    """One data point; a histogram's `value` is its sum, with its `count`."""

    name: str
    unit: str
    attributes: dict[str, object]
    value: float
    count: int | None
    resource: dict[str, object]


@dataclass(frozen=True, slots=True)
class ReceivedLog:
    body: object
    severity_text: str
    trace_id: str  # "" outside a trace
    span_id: str
    attributes: dict[str, object]
    scope: str
    resource: dict[str, object]


class OtlpReceiver:
    """What a receiver got. The lists are appended to from the server's loop
    or thread (list.append is atomic), and read by the test."""

    endpoint: str  # http://127.0.0.1:PORT

    def __init__(self) -> None:
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        # The headers (gRPC metadata) of every export request, lower-cased.
        self.headers: list[dict[str, str]] = []
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def receive(self, requests: list[_T], request: _T, headers: dict[str, str]) -> None:
        """Keep an export request; safe from any thread."""
        self.headers.append(headers)
        requests.append(request)
        self._loop.call_soon_threadsafe(self._arrived.set)

    def spans(self) -> list[ReceivedSpan]:
        return [
            ReceivedSpan(
                name=span.name,
                kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                attributes=attributes(span.attributes),
                status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                resource=attributes(resource_spans.resource.attributes),
            )
            for request in list(self.traces)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def points(self) -> list[ReceivedPoint]:
        points: list[ReceivedPoint] = []
        for request in list(self.metrics):
            for resource_metrics in request.resource_metrics:
                resource = attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        points.extend(_points(metric, resource))
        return points

    def log_records(self) -> list[ReceivedLog]:
        return [
            ReceivedLog(
                body=value(record.body),
                severity_text=record.severity_text,
                trace_id=record.trace_id.hex(),
                span_id=record.span_id.hex(),
                attributes=attributes(record.attributes),
                scope=scope_logs.scope.name,
                resource=attributes(resource_logs.resource.attributes),
            )
            for request in list(self.logs)
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]

    async def wait_for_spans(
        self,
        until: Callable[[list[ReceivedSpan]], bool] = bool,
    ) -> list[ReceivedSpan]:
        """The spans so far, once `until` holds for them (default: any)."""
        return await self._wait(self.spans, until, "spans")

    async def wait_for_points(
        self,
        until: Callable[[list[ReceivedPoint]], bool] = bool,
    ) -> list[ReceivedPoint]:
        return await self._wait(self.points, until, "metric points")

    async def wait_for_logs(
        self,
        until: Callable[[list[ReceivedLog]], bool] = bool,
    ) -> list[ReceivedLog]:
        return await self._wait(self.log_records, until, "log records")

    async def _wait(
        self, read: Callable[[], list[_T]], until: Callable[[list[_T]], bool], what: str
    ) -> list[_T]:
        try:
            async with asyncio.timeout(WAIT_TIMEOUT):
                while True:
                    # Cleared before reading: an export that lands after the
                    # read sets it again.
                    self._arrived.clear()
                    if until(got := read()):
                        return got
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(
                f"no matching {what} within {WAIT_TIMEOUT}s; got {_show(read())}"
            ) from None


class OtlpGrpcReceiver(OtlpReceiver):
    def __init__(self, port: int = 0) -> None:
        """Listens on `port`, else on a free one."""
        super().__init__()
        self._port = port

    async def __aenter__(self) -> Self:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsService(self), self._server
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(self), self._server)
        port = self._server.add_insecure_port(f"127.0.0.1:{self._port}")
        await self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._server.stop(None)


def _metadata(context: grpc.aio.ServicerContext[Message, Message]) -> dict[str, str]:
    return {
        key.lower(): value if isinstance(value, str) else value.decode()
        for key, value in context.invocation_metadata() or ()
    }


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    async def Export(  # noqa: N802 (gRPC method name)
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Message, Message],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver.receive(self._receiver.traces, request, _metadata(context))
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    async def Export(  # noqa: N802 (gRPC method name)
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.aio.ServicerContext[Message, Message],
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._receiver.receive(self._receiver.metrics, request, _metadata(context))
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    async def Export(  # noqa: N802 (gRPC method name)
        self,
        request: logs_service_pb2.ExportLogsServiceRequest,
        context: grpc.aio.ServicerContext[Message, Message],
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        self._receiver.receive(self._receiver.logs, request, _metadata(context))
        return logs_service_pb2.ExportLogsServiceResponse()


class OtlpHttpReceiver(OtlpReceiver):
    """OTLP/HTTP with protobuf bodies; `endpoint` is the base URL the
    exporters append /v1/<signal> to."""

    async def __aenter__(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                headers = {key.lower(): value for key, value in self.headers.items()}
                response: Message
                if self.path == "/v1/traces":
                    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    receiver.receive(receiver.traces, request, headers)
                    response = trace_service_pb2.ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    metrics = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                    receiver.receive(receiver.metrics, metrics, headers)
                    response = metrics_service_pb2.ExportMetricsServiceResponse()
                elif self.path == "/v1/logs":
                    logs = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
                    receiver.receive(receiver.logs, logs, headers)
                    response = logs_service_pb2.ExportLogsServiceResponse()
                else:
                    self.send_error(404)
                    return
                payload = response.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test output is for failures."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown waits for the loop to notice it.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        self._thread.join()


def attributes(pairs: Iterable[KeyValue]) -> dict[str, object]:
    return {pair.key: value(pair.value) for pair in pairs}


def value(any_value: AnyValue) -> object:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    return getattr(any_value, kind)


def _points(metric: Metric, resource: dict[str, object]) -> list[ReceivedPoint]:
    kind = metric.WhichOneof("data")
    if kind in ("sum", "gauge"):
        number_points = metric.sum.data_points if kind == "sum" else metric.gauge.data_points
        return [
            ReceivedPoint(
                metric.name,
                metric.unit,
                attributes(point.attributes),
                point.as_int if point.WhichOneof("value") == "as_int" else point.as_double,
                None,
                resource,
            )
            for point in number_points
        ]
    if kind == "histogram":
        return [
            ReceivedPoint(
                metric.name,
                metric.unit,
                attributes(point.attributes),
                point.sum,
                point.count,
                resource,
            )
            for point in metric.histogram.data_points
        ]
    return []


def _show(items: Sequence[object]) -> str:
    return "\n".join(map(repr, items)) or "none"
