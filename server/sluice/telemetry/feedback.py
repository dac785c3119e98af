"""Feedback as telemetry: the `sluice.feedback` metric, and a log record in
the trace of the call it is about."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from sluice.state.experiments import FeedbackTaken, FeedbackValue
from sluice.telemetry import semconv
from sluice.telemetry.core import Telemetry


def report_feedback(
    telemetry: Telemetry,
    call_id: str,
    name: str,
    value: FeedbackValue,
    taken: FeedbackTaken,
    *,
    comment: str,
) -> None:
    if value.number is not None:
        telemetry.instruments.feedback.record(
            value.number,
            {
                semconv.ROUTE: taken.route,
                semconv.VARIANT: taken.variant,
                semconv.FEEDBACK_NAME: name,
            },
        )
    access_log = telemetry.access_log
    if access_log is None:
        return
    entry = {
        "event": "feedback",
        "call_id": call_id,
        "route": taken.route,
        "variant": taken.variant,
        "name": name,
        "value": value.number if value.number is not None else value.text,
        "comment": comment or None,
        "replaced": taken.replaced,
    }
    access_log.record(entry, trace.set_span_in_context(_call_span(taken)))


def _call_span(taken: FeedbackTaken) -> trace.Span:
    """The call's span as a parent (the span itself ended long ago)."""
    if not taken.trace_id:
        return trace.INVALID_SPAN
    context = SpanContext(
        int(taken.trace_id, 16),
        int(taken.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return NonRecordingSpan(context)
