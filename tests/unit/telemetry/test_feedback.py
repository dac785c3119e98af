"""Feedback's log record joins the trace of the call it is about, not the
trace of the feedback call itself."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider

from sluice.state.experiments import FeedbackTaken, FeedbackValue
from sluice.telemetry import Telemetry
from sluice.telemetry.access_log import AccessLog
from sluice.telemetry.feedback import report_feedback

TRACE_ID = "0123456789abcdef0123456789abcdef"
SPAN_ID = "0123456789abcdef"


def exported_feedback(taken: FeedbackTaken) -> tuple[dict[str, object], Context | None]:
    records: list[tuple[str, Context | None]] = []
    telemetry = Telemetry(
        None,
        NoOpMeterProvider(),
        AccessLog(
            logging.StreamHandler(io.StringIO()),
            [lambda line, context: records.append((line, context))],
        ),
    )
    report_feedback(
        telemetry, "call-1", "thumbs", FeedbackValue("bool", 1.0), taken, comment="good"
    )
    [(line, context)] = records
    return json.loads(line), context


def test_the_record_joins_the_trace_of_the_call_it_is_about() -> None:
    taken = FeedbackTaken("chat", "b", replaced=False, trace_id=TRACE_ID, span_id=SPAN_ID)
    entry, context = exported_feedback(taken)

    span_context = trace.get_current_span(context).get_span_context()
    assert (f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}") == (TRACE_ID, SPAN_ID)
    assert entry["event"] == "feedback"
    assert entry["call_id"] == "call-1"


def test_a_call_that_was_not_traced_gives_a_record_with_no_trace() -> None:
    taken = FeedbackTaken("chat", "b", replaced=False, trace_id="", span_id="")
    _, context = exported_feedback(taken)

    assert not trace.get_current_span(context).get_span_context().is_valid
