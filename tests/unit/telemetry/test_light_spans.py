"""Light spans reach the exporters as the SDK's own spans would: same tree,
attributes, status, events, links and sampling decisions."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    DEFAULT_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import TraceState

from sluice.telemetry.light_spans import LightSpan, LightTracer

REMOTE = SpanContext(
    trace_id=0x0123456789ABCDEF0123456789ABCDEF,
    span_id=0x0123456789ABCDEF,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value")]),
)


def tracers(
    sampler: Sampler | None = None,
) -> tuple[trace.Tracer, trace.Tracer, InMemorySpanExporter]:
    """An SDK tracer and a light one over the same provider and exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sdk = provider.get_tracer("sluice", "1.0")
    assert isinstance(sdk, SdkTracer)
    return sdk, LightTracer(sdk, InstrumentationScope("sluice", "1.0")), exporter


def a_call(tracer: trace.Tracer) -> None:
    """What one gateway call does with spans, and more."""
    caller = trace.set_span_in_context(NonRecordingSpan(REMOTE))
    server = tracer.start_span(
        "sluice.v1.GatewayService/Chat",
        context=caller,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "sluice.call_id": "c1"},
    )
    context = trace.set_span_in_context(server)
    with trace.use_span(
        tracer.start_span("sluice.route", context=context, attributes={"route": "chat"}),
        end_on_exit=True,
    ) as route:
        route.set_attributes({"sluice.route": "chat", "sluice.strategy": "single"})
    attempt = tracer.start_span(
        "chat gpt-4o",
        context=context,
        kind=SpanKind.CLIENT,
        attributes={"gen_ai.request.stop_sequences": ["\n\n", "END"]},
        links=[Link(REMOTE, {"why": "x"})],
    )
    attempt.set_attribute("gen_ai.response.finish_reasons", ["stop"])
    attempt.set_attribute("unset", None)
    attempt.add_event("retry", {"attempt": 2}, timestamp=5)
    attempt.add_link(server.get_span_context(), {"kind": "server"})
    attempt.record_exception(ValueError("bad"), {"extra": 1}, timestamp=6, escaped=True)
    attempt.update_name("chat gpt-4o-mini")
    attempt.set_status(StatusCode.ERROR, "upstream refused")
    attempt.end(end_time=10**18)
    attempt.set_attribute("after end", 1)  # ignored: the span is over
    server.set_status(Status(StatusCode.OK))
    server.set_status(StatusCode.ERROR, "too late")  # OK is final
    server.set_status(StatusCode.UNSET)
    server.end()


def comparable(span: ReadableSpan) -> dict[str, object]:
    """What an exporter reads of a span; of ids, only which span is which."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind,
        "remote parent": span.parent is not None and span.parent.is_remote,
        "trace_id": context.trace_id,
        "flags": context.trace_flags,
        "trace_state": context.trace_state,
        "attributes": dict(span.attributes or {}),
        "events": [
            (event.name, event.timestamp, {**(event.attributes or {}), "exception.stacktrace": "-"})
            for event in span.events
        ],
        "links": [dict(link.attributes or {}) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "scope": span.instrumentation_scope,
        "resource": span.resource,
        "ended": (span.end_time or 0) >= (span.start_time or 1),
    }


def tree(spans: list[ReadableSpan]) -> list[tuple[str, str | None, list[str]]]:
    """Each span's name, its parent's name and the names its links point at."""
    names = {span.context.span_id: span.name for span in spans if span.context is not None}
    names[REMOTE.span_id] = "caller"
    return [
        (
            span.name,
            None if span.parent is None else names[span.parent.span_id],
            [names[link.context.span_id] for link in span.links],
        )
        for span in spans
    ]


@pytest.mark.parametrize("length_limit", [None, "4"], ids=["no limit", "values cut to 4"])
def test_a_calls_spans_are_what_the_sdk_would_export(
    length_limit: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if length_limit is not None:
        monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", length_limit)
    sdk, light, exporter = tracers()
    assert isinstance(sdk, SdkTracer)
    assert sdk.sampler is DEFAULT_ON  # the sampler light spans decide for without asking
    a_call(sdk)
    from_sdk = list(exporter.get_finished_spans())
    exporter.clear()
    a_call(light)
    from_light = list(exporter.get_finished_spans())

    assert tree(from_light) == tree(from_sdk)
    assert tree(from_light)[1] == (
        "chat gpt-4o-mini",
        "sluice.v1.GatewayService/Chat",
        ["caller", "sluice.v1.GatewayService/Chat"],
    )
    assert [comparable(span) for span in from_light] == [comparable(span) for span in from_sdk]


def test_a_span_ended_twice_is_exported_once(caplog: pytest.LogCaptureFixture) -> None:
    _, light, exporter = tracers()
    span = light.start_span("call")
    span.end()
    with caplog.at_level(logging.WARNING):
        span.end()
    assert len(exporter.get_finished_spans()) == 1
    assert "ended twice" in caplog.text


def test_a_sampler_that_drops_gives_non_recording_spans_and_exports_nothing() -> None:
    _, light, exporter = tracers(ALWAYS_OFF)
    span = light.start_span("call", attributes={"a": 1})
    span.set_attribute("b", 2)
    span.end()
    assert not isinstance(span, LightSpan)
    assert not span.is_recording()
    assert not span.get_span_context().trace_flags.sampled
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    "sampler", [None, ParentBased(TraceIdRatioBased(0.0))], ids=["default", "parent-based ratio"]
)
def test_an_unsampled_caller_is_followed_and_a_sampled_one_too(sampler: Sampler | None) -> None:
    _, light, exporter = tracers(sampler)
    unsampled = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    for caller in (unsampled, REMOTE):
        light.start_span("call", context=trace.set_span_in_context(NonRecordingSpan(caller))).end()
    [exported] = exporter.get_finished_spans()
    assert exported.context.trace_id == REMOTE.trace_id
    assert exported.context.trace_state == REMOTE.trace_state


def test_start_as_current_span_makes_the_span_current_and_ends_it() -> None:
    _, light, exporter = tracers()
    with light.start_as_current_span("outer") as outer:
        assert trace.get_current_span() is outer
        light.start_span("inner").end()
    inner, finished_outer = exporter.get_finished_spans()
    assert inner.parent is not None
    assert inner.parent.span_id == finished_outer.context.span_id
