"""Build the process's `Telemetry` from `telemetry:` and the OTEL_* environment.

Each exporter key set in the config wins over its environment variable, which
wins over the default: nothing exported. OTEL_SDK_DISABLED=true turns every
exporter off, whatever the config says; the access log stays. Where the config
leaves the OTLP endpoint or headers unset the exporters are given none, so
they read the standard variables themselves (OTEL_EXPORTER_OTLP_HEADERS,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT...), as the SDK reads OTEL_TRACES_SAMPLER
and OTEL_RESOURCE_ATTRIBUTES.

Console exporters write to stderr: stdout carries the access log, one JSON
object a line, and must stay machine-readable.

Access records go to the logs exporters only while the access log is on:
`access_log.enabled: false` means no access records anywhere.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, cast, get_args

import grpc
from opentelemetry import metrics
from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as SdkGrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    LogRecordExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
)
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from prometheus_client import CollectorRegistry, start_http_server

from sluice import __version__
from sluice.config import schema
from sluice.config.loader import ConfigError, ConfigProblem
from sluice.telemetry.access_log import LOGGER_NAME, AccessLog, LogExport
from sluice.telemetry.core import SCOPE, Telemetry
from sluice.telemetry.histograms import (
    CountingPeriodicReader,
    CountingPrometheusReader,
    HistogramBook,
)
from sluice.telemetry.otlp_spans import encode_spans

Signal = Literal["traces", "metrics", "logs"]
PROTOCOLS: tuple[schema.OtlpProtocol, ...] = get_args(schema.OtlpProtocol)
DEFAULT_SERVICE_NAME = "sluice"
DEFAULT_PROMETHEUS_HOST = "localhost"
DEFAULT_PROMETHEUS_PORT = 9464
# Where build errors about environment variables say they come from.
ENVIRONMENT = "environment"

# Records a batch processor encodes at once (the SDK's default: 512). The
# encoding holds the GIL while calls stream: measured with bench/ (sluice-traced
# vs sluice, 3 rounds each, 2026-11-26), 512 raised Sluice's TTFC p99 1.5x over
# untraced, 64 about 1.03x, at the same CPU per call. Measured again on
# 2026-12-05 with the batch encoded 64 spans at a time, the GIL and the core
# let go in between (os.sched_yield): p99 still 1.33-1.42x at 512. Where the
# loop and the exporter share a core, the exporter's longer runs of CPU delay
# the loop whatever the GIL does; and the CPU saved (15 µs a call, by
# bench/telemetry_cost.py) was below the rows' spread.
SMALL_BATCH = 64

Shutdown = Callable[[], object]
_Exporter = TypeVar("_Exporter")


def build_telemetry(
    config: schema.TelemetryConfig,
    environ: Mapping[str, str] = os.environ,
    *,
    worker: int | None = None,
) -> Telemetry:
    """Raises ConfigError for an environment variable it cannot use, and
    OSError when the Prometheus endpoint cannot listen. A `worker` (its
    index) is a process of its own to telemetry: its resource has its own
    service.instance.id, and its Prometheus endpoint the port after the
    previous worker's."""
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    configured: dict[Signal, Sequence[str] | None] = {
        "traces": config.traces_exporter,
        "metrics": config.metrics_exporter,
        "logs": config.logs_exporter,
    }
    exporters = {
        signal: [] if disabled else _exporters(names, signal, environ)
        for signal, names in configured.items()
    }
    # Everything is checked before anything starts: a bad variable must not
    # leave a listening Prometheus endpoint behind.
    otlp = _Otlp.resolve(
        config.otlp, [signal for signal, names in exporters.items() if "otlp" in names], environ
    )
    prometheus = (
        _prometheus_address(config, environ, worker)
        if "prometheus" in exporters["metrics"]
        else None
    )
    resource = _resource(config, environ, worker)

    shutdown: list[Shutdown] = []
    try:
        tracer_provider = _tracer_provider(
            exporters["traces"],
            resource,
            otlp,
            shutdown,
            batch=_batch_size(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        )
        histograms = HistogramBook(SCOPE)
        meter_provider, registry = _meter_provider(
            exporters["metrics"], resource, otlp, shutdown, histograms
        )
        log_exports = _log_exports(
            exporters["logs"],
            config.access_log,
            resource,
            otlp,
            shutdown,
            batch=_batch_size(environ, "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"),
        )
        if registry is not None and prometheus is not None:
            shutdown.append(_serve_prometheus(registry, *prometheus))
        access_log = (
            AccessLog.to(config.access_log.path, *log_exports)
            if config.access_log.enabled
            else None
        )
    except BaseException:
        for stop in shutdown:
            stop()
        raise
    return Telemetry(
        tracer_provider,
        meter_provider,
        access_log,
        capture_content=config.capture_content,
        histograms=histograms,
        shutdown=shutdown,
    )


_ALLOWED: dict[Signal, tuple[str, ...]] = {
    "traces": get_args(schema.TraceExporter),
    "metrics": get_args(schema.MetricExporter),
    "logs": get_args(schema.LogExporter),
}


def _exporters(
    configured: Sequence[str] | None, signal: Signal, environ: Mapping[str, str]
) -> list[str]:
    """The exporters a signal uses, `none` dropped: the config's list, else
    OTEL_<SIGNAL>_EXPORTER's comma list (checked here: the config's was
    checked when it loaded), else none."""
    if configured is None:
        variable = f"OTEL_{signal.upper()}_EXPORTER"
        value = environ.get(variable, "")
        configured = [name.strip() for name in value.split(",") if name.strip()]
        for name in configured:
            if name not in _ALLOWED[signal]:
                raise _environment_error(
                    variable, f"unknown exporter {name!r}; use {_choices(_ALLOWED[signal])}"
                )
    return list(dict.fromkeys(name for name in configured if name != "none"))


@dataclass(frozen=True, slots=True)
class _Otlp:
    """The OTLP exporters' settings: protocol per signal, and the config's
    endpoint and headers (None: the exporter reads its variables)."""

    protocols: Mapping[Signal, schema.OtlpProtocol]
    endpoint: str | None
    headers: dict[str, str] | None

    @classmethod
    def resolve(
        cls, config: schema.OtlpConfig, signals: list[Signal], environ: Mapping[str, str]
    ) -> _Otlp:
        return cls(
            {signal: _protocol(config, signal, environ) for signal in signals},
            config.endpoint,
            {name: value.get_secret_value() for name, value in config.headers.items()} or None,
        )

    def signal_url(self, signal: Signal) -> str | None:
        """OTLP/HTTP takes each signal's full URL; a bare
        OTEL_EXPORTER_OTLP_ENDPOINT gets the path from the exporter itself."""
        return None if self.endpoint is None else f"{self.endpoint.rstrip('/')}/v1/{signal}"


def _protocol(
    config: schema.OtlpConfig, signal: Signal, environ: Mapping[str, str]
) -> schema.OtlpProtocol:
    if config.protocol is not None:
        return config.protocol
    for variable in (
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ):
        value = environ.get(variable, "").strip()
        if not value:
            continue
        for protocol in PROTOCOLS:
            if value == protocol:
                return protocol
        raise _environment_error(variable, f"unknown protocol {value!r}; use {_choices(PROTOCOLS)}")
    # As in the Python SDK, whose `otlp` exporters are the gRPC ones.
    return "grpc"


def _prometheus_address(
    config: schema.TelemetryConfig, environ: Mapping[str, str], worker: int | None
) -> tuple[str, int]:
    host = (
        config.prometheus.host
        or environ.get("OTEL_EXPORTER_PROMETHEUS_HOST")
        or DEFAULT_PROMETHEUS_HOST
    )
    port = _prometheus_port(config, environ)
    # Each worker serves its own metrics; port 0 lets each pick one.
    return host, port + worker if worker and port else port


def _prometheus_port(config: schema.TelemetryConfig, environ: Mapping[str, str]) -> int:
    if config.prometheus.port is not None:
        return config.prometheus.port
    variable = "OTEL_EXPORTER_PROMETHEUS_PORT"
    value = environ.get(variable, "").strip()
    if not value:
        return DEFAULT_PROMETHEUS_PORT
    if not value.isdecimal() or int(value) > 65535:
        raise _environment_error(variable, f"{value!r} is not a port number (0-65535)")
    return int(value)


def _resource(
    config: schema.TelemetryConfig, environ: Mapping[str, str], worker: int | None
) -> Resource:
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and the SDK's own
    # attributes; the ones given here win over them.
    name = config.service_name or environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    attributes: dict[str, str] = {SERVICE_NAME: name, SERVICE_VERSION: __version__}
    if worker is not None:
        # Workers share a service name, so their series must differ by instance. The
        # SDK's random id would, unless OTEL_RESOURCE_ATTRIBUTES gives all one; this
        # one wins over it and names the process.
        attributes[SERVICE_INSTANCE_ID] = f"{socket.gethostname()}-{os.getpid()}"
    return Resource.create(attributes)


def _batch_size(environ: Mapping[str, str], variable: str) -> int | None:
    """SMALL_BATCH, unless the SDK's own `variable` is set (None: the SDK
    reads it)."""
    return None if environ.get(variable, "").strip() else SMALL_BATCH


def _tracer_provider(
    names: list[str],
    resource: Resource,
    otlp: _Otlp,
    shutdown: list[Shutdown],
    *,
    batch: int | None,
) -> TracerProvider | None:
    if not names:
        return None  # tracing off: no spans at all (telemetry/core.py)
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(
            BatchSpanProcessor(
                _exporter("traces", name, otlp, _SPAN_EXPORTERS), max_export_batch_size=batch
            )
        )
    shutdown.append(provider.shutdown)
    return provider


def _meter_provider(
    names: list[str],
    resource: Resource,
    otlp: _Otlp,
    shutdown: list[Shutdown],
    histograms: HistogramBook,
) -> tuple[metrics.MeterProvider, CollectorRegistry | None]:
    """The provider, and the registry a Prometheus endpoint should serve."""
    if not names:
        return NoOpMeterProvider(), None
    readers: list[MetricReader] = []
    registry = None
    for name in names:
        if name == "prometheus":
            # A registry of its own, not prometheus_client's global one: each
            # Telemetry serves only its own metrics and can be built again.
            registry = CollectorRegistry()
            readers.append(CountingPrometheusReader(registry=registry).count(histograms))
        else:
            exporter = _exporter("metrics", name, otlp, _METRIC_EXPORTERS)
            readers.append(CountingPeriodicReader(exporter).count(histograms))
    provider = MeterProvider(metric_readers=readers, resource=resource)
    shutdown.append(provider.shutdown)
    return provider, registry


def _log_exports(
    names: list[str],
    access_log: schema.AccessLogConfig,
    resource: Resource,
    otlp: _Otlp,
    shutdown: list[Shutdown],
    *,
    batch: int | None,
) -> list[LogExport]:
    """What turns access log lines into log records."""
    if not names or not access_log.enabled:
        return []
    provider = LoggerProvider(resource=resource)
    for name in names:
        provider.add_log_record_processor(
            BatchLogRecordProcessor(
                _exporter("logs", name, otlp, _LOG_EXPORTERS), max_export_batch_size=batch
            )
        )
    shutdown.append(provider.shutdown)
    return [_log_records(provider.get_logger(LOGGER_NAME, __version__))]


class GrpcSpanExporter(SdkGrpcSpanExporter):
    """The SDK's OTLP/gRPC span exporter (endpoint, TLS, headers, retries),
    with its requests written by `otlp_spans` (a fifth of the SDK encoder's
    CPU) and sent as those bytes: the channel's stub takes them as they are,
    where parsing them into a message for the SDK's stub to serialize again
    cost 1 µs a span. (The HTTP exporter encodes inside `export`: it keeps
    the SDK's encoder.)"""

    def _initialize_channel_and_stub(self) -> None:
        # The SDK calls this at construction and again to reconnect.
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        # The SDK types both by their first value, None.
        self._client = _EncodedExport(cast(grpc.Channel, self._channel))  # type: ignore[assignment]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        return encode_spans(data)


class _EncodedExport:
    """TraceService.Export taking the request as encoded bytes."""

    def __init__(self, channel: grpc.Channel) -> None:
        # Named as the generated stub names it: the SDK calls `Export`.
        self.Export: grpc.UnaryUnaryMultiCallable[bytes, ExportTraceServiceResponse] = (
            channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )
        )


@dataclass(frozen=True)  # not slots: slots=True rebuilds the class, which Generic does not survive
class _ExporterKinds(Generic[_Exporter]):
    """A signal's exporter classes."""

    console: Callable[..., _Exporter]
    grpc: Callable[..., _Exporter]
    http: Callable[..., _Exporter]


_SPAN_EXPORTERS = _ExporterKinds[SpanExporter](
    ConsoleSpanExporter, GrpcSpanExporter, HttpSpanExporter
)
_METRIC_EXPORTERS = _ExporterKinds[MetricExporter](
    ConsoleMetricExporter, GrpcMetricExporter, HttpMetricExporter
)
_LOG_EXPORTERS = _ExporterKinds[LogRecordExporter](
    ConsoleLogRecordExporter, GrpcLogExporter, HttpLogExporter
)


def _exporter(
    signal: Signal, name: str, otlp: _Otlp, kinds: _ExporterKinds[_Exporter]
) -> _Exporter:
    """Exporter `name` (`console` or `otlp`) of `signal`."""
    if name == "console":
        return kinds.console(out=sys.stderr)
    if otlp.protocols[signal] == "grpc":
        return kinds.grpc(endpoint=otlp.endpoint, headers=otlp.headers)
    return kinds.http(endpoint=otlp.signal_url(signal), headers=otlp.headers)


def _log_records(logger: Logger) -> LogExport:
    """Each access log line as a log record whose body is the line. (The
    SDK's LoggingHandler is deprecated, and would add code.* attributes that
    mean nothing for these records.)"""

    def emit(line: str, context: Context | None) -> None:
        # Access records are all INFO.
        logger.emit(
            timestamp=time.time_ns(),
            context=context,
            severity_number=SeverityNumber.INFO,
            severity_text="INFO",
            body=line,
        )

    return emit


def _serve_prometheus(registry: CollectorRegistry, host: str, port: int) -> Shutdown:
    """Start the scrape endpoint; returns what stops it."""
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as error:
        raise OSError(
            error.errno, f"cannot serve Prometheus metrics on {host}:{port}: {error.strerror}"
        ) from error

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


def _environment_error(variable: str, message: str) -> ConfigError:
    return ConfigError(ENVIRONMENT, [ConfigProblem(None, (variable,), message)])


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(values[:-1]) + f" or {values[-1]}"
