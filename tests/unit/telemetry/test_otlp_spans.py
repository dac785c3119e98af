"""Spans written by hand as OTLP decode to the very message the SDK's encoder
builds, whatever the span holds."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import AttributeValue

from sluice.telemetry import otlp_spans
from sluice.telemetry.otlp_spans import encode_spans


def recorder(
    resource: Resource | None = None, limits: SpanLimits | None = None
) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource or Resource.create({}), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("sluice", "1.2.3", schema_url="https://example.com/s"), exporter


def decoded(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_spans(spans))


def test_every_attribute_type_kind_and_status_matches_the_sdk() -> None:
    tracer, exporter = recorder(Resource.create({"service.name": "sluice", "workers": 2}))
    values: dict[str, AttributeValue] = {
        "text": "bench-chat",
        "long text": "x" * 300,
        "unicode": "déjà vu ✓",
        "empty": "",
        "yes": True,
        "no": False,
        "zero": 0,
        "count": 1_000_000,
        "negative": -3,
        "smallest": -(2**63),
        "largest": 2**63 - 1,
        "ratio": 0.25,
        "negative ratio": -1e-300,
        "texts": ("stop", "length"),
        "flags": (True, False),
        "numbers": (1, -2, 300),
        "ratios": (0.5, 1.5),
        "nothing": (),
    }
    for kind in SpanKind:
        with tracer.start_as_current_span(f"span {kind.name}", kind=kind, attributes=values):
            pass
    failed = tracer.start_span("failed")
    failed.set_status(StatusCode.ERROR, "upstream refused")
    failed.end()
    ok = tracer.start_span("ok")
    ok.set_status(StatusCode.OK)
    ok.end()
    bare_error = tracer.start_span("bare error")
    bare_error.set_status(StatusCode.ERROR)
    bare_error.end()

    spans = list(exporter.get_finished_spans())
    assert len(spans) == len(SpanKind) + 3
    assert decoded(spans) == sdk_encode(spans)


def test_parents_remote_parents_trace_state_events_and_links_match_the_sdk() -> None:
    tracer, exporter = recorder()
    remote = SpanContext(
        trace_id=0x0123456789ABCDEF0123456789ABCDEF,
        span_id=0x0123456789ABCDEF,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "1")]),
    )
    caller = trace.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span("server", context=caller, kind=SpanKind.SERVER) as server:
        server.add_event("retry", {"attempt": 2, "reason": "UPSTREAM_UNAVAILABLE"})
        server.add_event("bare")
        with tracer.start_as_current_span(
            "child", links=[Link(remote, {"why": "shadow"}), Link(server.get_span_context())]
        ):
            pass

    spans = list(exporter.get_finished_spans())
    assert [span.name for span in spans] == ["child", "server"]
    assert decoded(spans) == sdk_encode(spans)


def test_dropped_counts_match_the_sdk() -> None:
    tracer, exporter = recorder(limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1))
    context = SpanContext(1, 2, is_remote=False)
    span = tracer.start_span(
        "crowded", attributes={"a": 1, "b": 2, "c": 3}, links=[Link(context), Link(context)]
    )
    span.add_event("first", {"x": 1})
    span.add_event("second")
    span.end()

    [finished] = exporter.get_finished_spans()
    assert (finished.dropped_attributes, finished.dropped_events, finished.dropped_links) == (
        1,
        1,
        1,
    )
    assert decoded([finished]) == sdk_encode([finished])


def test_spans_of_two_resources_are_grouped_per_resource_and_scope() -> None:
    first, first_exporter = recorder(Resource.create({"service.instance.id": "a"}))
    second, second_exporter = recorder(Resource.create({"service.instance.id": "b"}))
    for tracer in (first, second, first):
        tracer.start_span("call").end()

    spans = [*first_exporter.get_finished_spans(), *second_exporter.get_finished_spans()]
    request = decoded(spans)
    assert [len(group.scope_spans[0].spans) for group in request.resource_spans] == [2, 1]
    assert request == sdk_encode(spans)


def test_a_value_no_otlp_type_holds_is_left_out_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer, exporter = recorder()
    span = tracer.start_span("call", attributes={"kept": "yes"})
    span.end()
    [finished] = exporter.get_finished_spans()
    # The SDK checks attributes as they are set; a span built by hand skips that.
    odd = ReadableSpan(
        name="odd",
        context=finished.context,
        attributes={"kept": "yes", "too big": 2**64, "object": object()},  # type: ignore[dict-item]
        resource=finished.resource,
        instrumentation_scope=finished.instrumentation_scope,
        start_time=1,
        end_time=2,
    )

    with caplog.at_level(logging.WARNING, logger="sluice.telemetry.otlp_spans"):
        [kept] = decoded([odd]).resource_spans[0].scope_spans[0].spans[0].attributes

    assert kept.key == "kept"
    assert kept.value.string_value == "yes"
    assert "too big" in caplog.text
    assert "object" in caplog.text


def test_equal_values_of_other_types_are_not_taken_for_one_another() -> None:
    # True == 1 == 1.0 and 0 == 0.0 == -0.0 to a dict key; each has its own bytes.
    values: list[AttributeValue] = [True, 1, 1.0, "1", False, 0, 0.0, -0.0, "0", "", ("1",)]
    tracer, exporter = recorder()
    for value in values * 2:
        tracer.start_span("call", attributes={"value": value}).end()

    spans = list(exporter.get_finished_spans())
    assert decoded(spans) == sdk_encode(spans)


def test_a_pair_seen_in_one_place_is_written_right_in_every_other() -> None:
    # The same key and value: a resource's, a span's, an event's and a link's attribute.
    pair = {"sluice.route": "chat"}
    tracer, exporter = recorder(Resource.create(pair))
    with tracer.start_as_current_span("first", attributes=pair) as first:
        first.add_event("retry", pair)
    tracer.start_span("second", links=[Link(first.get_span_context(), pair)]).end()

    spans = list(exporter.get_finished_spans())
    assert decoded(spans) == sdk_encode(spans)


def test_values_past_the_cache_bounds_are_written_right_and_the_cache_stays_bounded() -> None:
    tracer, exporter = recorder()
    for number in [*range(otlp_spans._MAX_FIELDS + 10), *range(10)]:
        tracer.start_span("call", attributes={"sluice.call_id": f"call {number}"}).end()
    tracer.start_span("call", attributes={"message": "x" * otlp_spans._MAX_CACHED_SIZE}).end()

    spans = list(exporter.get_finished_spans())
    assert decoded(spans) == sdk_encode(spans)
    assert 0 < len(otlp_spans._FIELDS) <= otlp_spans._MAX_FIELDS
    assert max(map(len, otlp_spans._FIELDS.values())) <= otlp_spans._MAX_CACHED_SIZE


def test_unicode_values_are_written_as_utf8_however_long() -> None:
    values = ["déjà vu", "✓", "模型", "🚀 launch", "e\u0301", "é", "✓" * 50, "ü" * 200]
    tracer, exporter = recorder()
    for value in values * 2:
        tracer.start_span("call", attributes={"text": value, value: "key"}).end()

    spans = list(exporter.get_finished_spans())
    assert decoded(spans) == sdk_encode(spans)


def test_sizes_and_integers_at_each_varint_length_match_the_sdk() -> None:
    bounds = [0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000]
    tracer, exporter = recorder()
    for bound in bounds:
        tracer.start_span("call", attributes={"number": bound, "text": "x" * bound}).end()

    spans = list(exporter.get_finished_spans())
    assert decoded(spans) == sdk_encode(spans)
