"""Spans recorded with a fraction of the SDK's work.

The SDK's span costs 16 µs to start, hold a call's attributes and end: a
lock and a validation per attribute, a BoundedAttributes, span processor
hooks at the start. A call makes four. `LightTracer` keeps what exporters
read, and decides what the SDK decides: it asks the SDK tracer's sampler and
id generator, holds the attributes in a dict, and at `end` hands the span
itself (a `ReadableSpan`, as the SDK's own spans are) to the SDK tracer's
span processors, which batch and export as before (tests/unit/telemetry/
test_light_spans.py holds it to the SDK's output).

Left out, as Sluice does not need them: the span limits on counts (a Sluice
span holds a fixed set of attributes, far below the SDK's 128; the limit on
an attribute's length is applied), attribute validation (Sluice sets only
strings, bools, numbers and their sequences; lists are kept as tuples, as
the SDK keeps them), processors' `on_start` (the batch and simple processors
have none), and locks (spans live on the event loop).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes, AttributeValue

_logger = logging.getLogger(__name__)

# A span's flags by (sampled, random trace id), made once.
_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}
_UNSET = Status(StatusCode.UNSET)


class LightTracer(trace.Tracer):
    """Spans of `scope`, sampled, identified and exported as `sdk_tracer`'s."""

    def __init__(self, sdk_tracer: SdkTracer, scope: InstrumentationScope) -> None:
        self._sampler = sdk_tracer.sampler
        self._ids = sdk_tracer.id_generator
        self.processor = sdk_tracer.span_processor
        self.resource = sdk_tracer.resource
        self.scope = scope
        # The SDK's limits on an attribute's length, read from the environment
        # as the SDK reads them (its limit on their count, 128, is far above
        # the fixed set a Sluice span holds): a span's, and its events' and links'.
        limits = SpanLimits()
        self.max_length = limits.max_span_attribute_length
        self.max_other_length = limits.max_attribute_length

    def start_span(  # noqa: PLR0917 (the API's signature)
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        else:
            parent = None
            trace_id = self._ids.generate_trace_id()
            random_trace_id = self._ids.is_trace_id_random()
        if self._sampler is DEFAULT_ON:
            # The default sampler's decision, without its result objects
            # (4 µs a span): follow the parent, sample a new trace.
            sampled = parent is None or parent.trace_flags.sampled
            decision = Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP
            trace_state = None if parent is None else parent.trace_state
            span_attributes = _stored(attributes, self.max_length)
        else:
            sampling = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision, trace_state = sampling.decision, sampling.trace_state
            span_attributes = _stored(sampling.attributes, self.max_length)
        span_context = SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=_FLAGS[decision is Decision.RECORD_AND_SAMPLE, random_trace_id],
            trace_state=trace_state,
        )
        if decision is Decision.DROP:
            return trace.NonRecordingSpan(span_context)
        return LightSpan(
            self,
            name,
            span_context,
            parent=parent,
            kind=kind,
            attributes=span_attributes,
            links=[self.link(link.context, link.attributes) for link in links] if links else [],
            start_time=start_time or time.time_ns(),
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]  # noqa: PLR0917 (the API's signature)
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current

    def link(self, context: SpanContext, attributes: Attributes) -> Link:
        return Link(context, _stored(attributes, self.max_other_length))


def _stored(attributes: Attributes, max_length: int | None) -> dict[str, AttributeValue]:
    """A span's own copy of `attributes`, each value as `_kept`."""
    if not attributes:
        return {}
    if max_length is not None:
        return {key: _kept(value, max_length) for key, value in attributes.items()}
    # No length limit (the default): only sequences change, and a span's
    # attributes are mostly scalars; a copy and one look at each is a third
    # of the cost of `_kept` on each.
    stored = dict(attributes)
    for key, value in stored.items():
        if type(value) is list or type(value) is tuple:
            stored[key] = tuple(_kept(item, None) for item in value)
    return stored


def _kept(value: AttributeValue, max_length: int | None) -> AttributeValue:
    """`value` as the SDK keeps it: sequences as tuples, strings cut to the
    length limit (OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT, else
    OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT; none by default)."""
    if isinstance(value, str):
        return value if max_length is None else value[:max_length]
    if isinstance(value, list | tuple):
        return tuple(_kept(item, max_length) for item in value)
    return value


class LightSpan(trace.Span, ReadableSpan):
    """A recording span of a `LightTracer`. Like the SDK's own span, it is
    its own `ReadableSpan`: ending it hands this object to the processors,
    with no copy made."""

    def __init__(
        self,
        tracer: LightTracer,
        name: str,
        context: SpanContext,
        *,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        links: list[Link],
        start_time: int,
    ) -> None:
        # ReadableSpan's fields, set here rather than by its __init__ (which
        # would look up a default resource the tracer already has).
        self._tracer = tracer
        self._name = name
        self._context: SpanContext = context
        self._parent = parent
        self._kind = kind
        self._attributes: dict[str, AttributeValue] = attributes
        self._links: list[Link] = links
        self._events: list[Event] = []
        self._status = _UNSET
        self._start_time = start_time
        self._end_time: int | None = None
        self._resource = tracer.resource
        self._instrumentation_scope = tracer.scope
        self._instrumentation_info = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._end_time is None:
            self._attributes[key] = _kept(value, self._tracer.max_length)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        # A call sets some twenty at its end: one copy, not a call each.
        if self._end_time is None:
            self._attributes.update(_stored(attributes, self._tracer.max_length))

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is None:
            kept = _stored(attributes, self._tracer.max_other_length)
            self._events.append(Event(name, kept, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self._end_time is None and context.is_valid:
            self._links.append(self._tracer.link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, and UNSET changes nothing.
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind, module = type(exception), type(exception).__module__
        recorded: dict[str, AttributeValue] = {
            "exception.type": (
                kind.__qualname__ if module in ("", "builtins") else f"{module}.{kind.__qualname__}"
            ),
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        recorded.update(attributes or {})
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            _logger.warning("span %s ended twice", self._name)
            return
        self._end_time = end_time or time.time_ns()
        self._tracer.processor.on_end(self)
