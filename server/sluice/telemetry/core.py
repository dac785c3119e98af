"""The process's telemetry: one tracer, one set of instruments and the access
log, shared by every gateway a config reload builds.

It is built once, from the config the server starts with (`setup.py`);
exporters, the Prometheus endpoint and the access log's file are fixed for
the life of the process, so a reload that changes `telemetry:` is applied at
the next restart (the reload says so in the log).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from sluice import __version__
from sluice.telemetry.access_log import AccessLog
from sluice.telemetry.histograms import HistogramBook
from sluice.telemetry.instruments import Instruments
from sluice.telemetry.light_spans import LightTracer

# Sluice's spans and metrics: one scope for the tracer, the meter and the histograms.
SCOPE = InstrumentationScope("sluice", __version__)


class Telemetry:
    """`shutdown` callables flush and stop the exporters, in order."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: metrics.MeterProvider,
        access_log: AccessLog | None = None,
        *,
        capture_content: bool = False,
        histograms: HistogramBook | None = None,
        shutdown: Sequence[Callable[[], object]] = (),
    ) -> None:
        """`histograms` is the book `meter_provider`'s readers count
        (`CountingReader`); without one, histograms are not exported."""
        # No provider: tracing is off, and no span object is ever made; the
        # caller's trace context still reaches the upstream unchanged.
        self.tracing = tracer_provider is not None
        self.tracer = trace.NoOpTracer() if tracer_provider is None else _tracer(tracer_provider)
        self.instruments = Instruments(
            meter_provider.get_meter(SCOPE.name, SCOPE.version),
            histograms or HistogramBook(SCOPE),
        )
        # No metrics exported: the per-call ones are not even assembled.
        self.metering = not isinstance(meter_provider, NoOpMeterProvider)
        self.access_log = access_log
        self.capture_content = capture_content
        self._shutdown = shutdown

    @classmethod
    def off(cls) -> Telemetry:
        """Nothing recorded or exported."""
        return cls(None, NoOpMeterProvider())

    async def aclose(self) -> None:
        """Flush what is buffered and stop the exporters (they block: run
        them off the event loop)."""
        for shutdown in self._shutdown:
            await asyncio.to_thread(shutdown)
        if self.access_log is not None:
            self.access_log.close()


def _tracer(provider: TracerProvider) -> trace.Tracer:
    """Sluice's spans, recorded light (`light_spans`) and exported through
    `provider`'s sampler and processors."""
    tracer = provider.get_tracer(SCOPE.name, SCOPE.version)
    if not isinstance(tracer, SdkTracer):  # the SDK hands out a no-op one when disabled
        return tracer
    return LightTracer(tracer, SCOPE)
