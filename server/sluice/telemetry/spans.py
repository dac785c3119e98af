"""Span helpers every telemetry module shares."""

from __future__ import annotations

from opentelemetry.trace import Span, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sluice.telemetry import semconv

# W3C trace context only: baggage from a caller is not forwarded anywhere.
TRACE_CONTEXT = TraceContextTextMapPropagator()


def mark_failed(span: Span, error_type: str, message: str = "") -> None:
    span.set_attribute(semconv.ERROR_TYPE, error_type)
    span.set_status(StatusCode.ERROR, message or None)
