"""A call as telemetry sees it.

`CallTrace` is what the pipeline carries (as `Call.trace`) and the one
interface its stages report through: named methods (`routing`, `retry`,
`fallback`, `cache_lookup`, `limit_refused`, `attempt`...) that know the span
and metric names, so no stage imports them. It also sums the time the call
spent waiting on upstreams. `CallObservation` is the edge's view, owned by
the servicer: the gRPC SERVER span (continuing the caller's `traceparent`),
the per-call metrics and the access log line, all finished in `end` from the
`CallFacts` the pipeline decided.
"""

from __future__ import annotations

import functools
import math
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue

from sluice.domain import Event, Operation, Request, Start, Usage
from sluice.errors import GatewayError, Status
from sluice.telemetry import semconv
from sluice.telemetry.core import Telemetry
from sluice.telemetry.spans import TRACE_CONTEXT, mark_failed
from sluice.telemetry.upstream import UpstreamSpan
from sluice.truncation import truncate

if TYPE_CHECKING:
    from sluice.routes import Target

SERVICE = "sluice.v1.GatewayService"

# Server span status per the RPC conventions: these codes are the server's fault.
_SERVER_ERRORS = frozenset({Status.INTERNAL, Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED})


class CallTrace:
    """The call's telemetry, as the pipeline reports to it: each stage says
    what happened through a named method, and never names a span attribute
    or a metric itself. Spans start under the call's span (`context`)."""

    __slots__ = ("context", "telemetry", "upstream_seconds")

    def __init__(self, telemetry: Telemetry, context: Context | None = None) -> None:
        self.telemetry = telemetry
        self.context = context
        # Waiting on upstream answers, and backing off between attempts.
        self.upstream_seconds = 0.0

    @classmethod
    def untraced(cls) -> CallTrace:
        return cls(_OFF)

    # --- stages ----------------------------------------------------------------------

    def authenticating(self) -> AbstractContextManager[StageSpan]:
        return self._span("sluice.auth")

    def routing(self, requested_route: str) -> AbstractContextManager[StageSpan]:
        return self._span("sluice.route", {semconv.REQUESTED_ROUTE: truncate(requested_route)})

    def admitting(self) -> AbstractContextManager[StageSpan]:
        return self._span("sluice.limits.admit")

    def settling(self) -> AbstractContextManager[StageSpan]:
        return self._span("sluice.limits.settle")

    def limit_refused(self, route: str, limit: str, scope: str) -> None:
        self.telemetry.instruments.limit_refusals.add(
            1, {semconv.ROUTE: route, semconv.LIMIT: limit, semconv.SCOPE: scope}
        )

    def cache_lookup(self, route: str) -> AbstractContextManager[StageSpan]:
        return self._span("sluice.cache.lookup", {semconv.ROUTE: route})

    def semantic_lookup(self, route: str) -> AbstractContextManager[StageSpan]:
        """The semantic cache's lookup; the embeddings call's own spans are its siblings."""
        return self._span("sluice.cache.semantic_lookup", {semconv.ROUTE: route})

    def cache_storing(self, route: str) -> AbstractContextManager[StageSpan]:
        return self._span("sluice.cache.store", {semconv.ROUTE: route})

    def retry(self, route: str) -> None:
        self.telemetry.instruments.retries.add(1, {semconv.ROUTE: route})

    def fallback(self, route: str, target: Target) -> None:
        self.telemetry.instruments.fallbacks.add(
            1, {semconv.ROUTE: route, semconv.TARGET: target.label}
        )

    def waited(self, seconds: float) -> None:
        """The call waited `seconds` on upstreams (for an answer, or backing
        off before a retry): time not spent in the gateway itself."""
        self.upstream_seconds += seconds

    def attempt(
        self, route: str, target: Target, request: Request, *, number: int, shadow: bool = False
    ) -> UpstreamSpan:
        """An attempt at `target` (a shadow mirror's is kept apart)."""
        return UpstreamSpan(
            self.telemetry,
            self.context,
            route,
            target,
            request,
            attempt=number,
            on_wait=None if shadow else self.waited,
        )

    def shadow_result(self, route: str, target: str, outcome: str) -> None:
        self.telemetry.instruments.shadow_calls.add(
            1, {semconv.ROUTE: route, semconv.TARGET: target, semconv.SHADOW_OUTCOME: outcome}
        )

    def _span(self, name: str, attributes: Attributes = None) -> AbstractContextManager[StageSpan]:
        if not self.telemetry.tracing:
            return nullcontext(StageSpan(INVALID_SPAN, self.telemetry))
        return self._traced(name, attributes)

    @contextmanager
    def _traced(self, name: str, attributes: Attributes) -> Iterator[StageSpan]:
        """An INTERNAL span of a stage's work under the call's span. A
        GatewayError inside marks it failed with the error's reason. The
        current context is left as it is: every span names its parent, so
        nothing inside a stage reads it."""
        span = self.telemetry.tracer.start_span(name, context=self.context, attributes=attributes)
        try:
            yield StageSpan(span, self.telemetry)
        except GatewayError as error:
            mark_failed(span, error.reason, error.message)
            raise
        finally:
            span.end()


class StageSpan:
    """What a stage found out while its span is open."""

    __slots__ = ("_span", "_telemetry")

    def __init__(self, span: Span, telemetry: Telemetry) -> None:
        self._span = span
        self._telemetry = telemetry

    def identified(self, key_name: str) -> None:
        self._span.set_attribute(semconv.KEY_NAME, key_name)

    def routed(self, route: str, strategy: str) -> None:
        self._span.set_attributes({semconv.ROUTE: route, semconv.STRATEGY: strategy})

    def provider_options(self, keys: list[str]) -> None:
        """The provider options a call carries, as `provider.key` (never values)."""
        self._span.set_attribute(semconv.PROVIDER_OPTION_KEYS, keys)

    def cache_result(self, route: str, result: str, kind: str = "exact") -> None:
        """hit, miss or error of the exact or semantic cache: on the lookup's span, and counted."""
        self._span.set_attribute(semconv.CACHE_RESULT, result)
        self._telemetry.instruments.cache_lookups.add(
            1, {semconv.ROUTE: route, semconv.CACHE_KIND: kind, semconv.CACHE_RESULT: result}
        )


_OFF = Telemetry.off()


class CallObservation:
    """One gRPC call to the gateway, from arrival to its last message."""

    def __init__(self, telemetry: Telemetry, method: str, headers: Mapping[str, str]) -> None:
        self._telemetry = telemetry
        self._method = method
        # Unique per call: the caller sees it (sluice-call-id) and can quote it.
        # 128 random bits as 32 hex digits, a third of uuid4().hex's cost.
        self.call_id = secrets.token_hex(16)
        self._started = time.monotonic()
        self._arrived = time.time()
        caller = TRACE_CONTEXT.extract(headers)
        if telemetry.tracing:
            self.span = telemetry.tracer.start_span(
                f"{SERVICE}/{method}",
                context=caller,
                kind=SpanKind.SERVER,
                attributes={
                    semconv.RPC_SYSTEM: "grpc",
                    semconv.RPC_SERVICE: SERVICE,
                    semconv.RPC_METHOD: method,
                    semconv.CALL_ID: self.call_id,
                },
            )
            self.trace = CallTrace(telemetry, trace.set_span_in_context(self.span))
        else:
            # The caller's span stands in: its context goes upstream as it came.
            self.span = trace.get_current_span(caller)
            self.trace = CallTrace(telemetry, caller)
        self._first_chunk: float | None = None
        self._start: Start | None = None
        self._usage: Usage | None = None
        if telemetry.metering:
            telemetry.instruments.active_streams.add(1, {semconv.RPC_METHOD: method})

    def observe(self, event: Event) -> None:
        """Note an event on its way to the caller."""
        if self._first_chunk is None:
            if isinstance(event, Start):
                self._start = event
                return
            self._first_chunk = time.monotonic()
        if isinstance(event, Usage):
            self._usage = event

    @property
    def time_to_first_chunk(self) -> float | None:
        return None if self._first_chunk is None else self._first_chunk - self._started

    @property
    def usage(self) -> Usage | None:
        return self._usage

    @property
    def trace_ids(self) -> tuple[str, str]:
        """The call's span's trace and span ids (hex); "" when untraced."""
        context = self.span.get_span_context()
        if not context.is_valid:
            return "", ""
        return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)

    def end(
        self, facts: CallFacts | None, status: Status | None, error: GatewayError | None = None
    ) -> None:
        """Finish the span, record the call's metrics and write its access
        log line. `status` None: the call succeeded; `facts` None: it was
        refused before it was decoded."""
        outcome = self._outcome(facts, status, error)
        telemetry = self._telemetry
        if telemetry.tracing:
            self._end_span(outcome)
        if telemetry.metering:
            self._record(outcome, facts)
        access_log = telemetry.access_log
        if access_log is not None:
            # In the call's context, so an exported log record joins its trace.
            access_log.write(self._access_entry(outcome), self.trace.context)

    def _outcome(
        self, facts: CallFacts | None, status: Status | None, error: GatewayError | None
    ) -> _Outcome:
        return _Outcome(
            duration=time.monotonic() - self._started,
            status=status,
            error=error,
            operation=semconv.OPERATION_NAMES[facts.operation] if facts else None,
            route=facts.route if facts else None,
            key_name=facts.key_name if facts else None,
            cache_hit=(self._start is not None and self._start.cache_hit) if facts else None,
            cache_similarity=self._start.cache_similarity if self._start is not None else None,
            target=facts.target if facts else None,
            # From the start event, so that a cache replay names its variant too.
            variant=(self._start.variant or None) if self._start is not None else None,
            attempts=facts.attempts if facts else None,
            usage=self._usage,
            cost=facts.cost if facts else 0.0,
            ttfc=None if self._first_chunk is None else self._first_chunk - self._started,
        )

    def _end_span(self, outcome: _Outcome) -> None:
        span = self.span
        usage = outcome.usage
        span.set_attributes(
            _present(
                {
                    semconv.RPC_GRPC_STATUS_CODE: _grpc_code(outcome.status),
                    semconv.OPERATION_NAME: outcome.operation,
                    semconv.ROUTE: outcome.route,
                    semconv.KEY_NAME: outcome.key_name,
                    semconv.CACHE_HIT: outcome.cache_hit,
                    semconv.CACHE_SIMILARITY: outcome.cache_similarity,
                    semconv.ATTEMPTS: outcome.attempts,
                    semconv.TARGET: outcome.target.label if outcome.target else None,
                    semconv.VARIANT: outcome.variant,
                    semconv.TIME_TO_FIRST_CHUNK: outcome.ttfc,
                    semconv.COST_USD: outcome.cost,
                    **(semconv.usage_attributes(usage) if usage is not None else {}),
                }
            )
        )
        if outcome.error_type is not None:
            span.set_attribute(semconv.ERROR_TYPE, outcome.error_type)
            if outcome.status in _SERVER_ERRORS:
                span.set_status(StatusCode.ERROR, outcome.error.message if outcome.error else None)
        span.end()

    def _record(self, outcome: _Outcome, facts: CallFacts | None) -> None:
        instruments = self._telemetry.instruments
        labels = _present({semconv.RPC_METHOD: self._method, semconv.ROUTE: outcome.route})
        # Bounded: variant names come from the config.
        variant = _present({semconv.VARIANT: outcome.variant})
        instruments.active_streams.add(-1, {semconv.RPC_METHOD: self._method})
        instruments.requests.add(
            1,
            _present(
                {
                    **labels,
                    **variant,
                    semconv.STATUS: outcome.status_name,
                    semconv.KEY_NAME: outcome.key_name,
                }
            ),
        )
        if facts is None:
            return
        operation = {semconv.OPERATION_NAME: outcome.operation or ""}
        instruments.request_duration.record(
            outcome.duration,
            _present({**labels, **variant, **operation, semconv.ERROR_TYPE: outcome.error_type}),
        )
        if outcome.ttfc is not None:
            instruments.time_to_first_token.record(
                outcome.ttfc, {**labels, **operation, semconv.CACHE_HIT: bool(outcome.cache_hit)}
            )
        instruments.overhead.record(max(0.0, outcome.duration - facts.upstream_seconds), labels)
        target = outcome.target
        if outcome.cost and target is not None:
            instruments.cost.add(
                outcome.cost,
                _present(
                    {
                        semconv.ROUTE: outcome.route,
                        semconv.KEY_NAME: outcome.key_name,
                        semconv.PROVIDER_NAME: target.otel_provider,
                        semconv.REQUEST_MODEL: target.model,
                    }
                ),
            )

    def _access_entry(self, outcome: _Outcome) -> dict[str, object]:
        usage, start = outcome.usage, self._start
        return {
            "time": _timestamp(self._arrived),
            "call_id": self.call_id,
            "method": self._method,
            "route": outcome.route,
            "target": outcome.target.label if outcome.target is not None else None,
            "variant": outcome.variant,
            "key_name": outcome.key_name,
            "status": outcome.status_name,
            "reason": outcome.error.reason if outcome.error else None,
            "attempts": outcome.attempts or 0,
            "cache_hit": bool(outcome.cache_hit),
            # Set only on a semantic hit: exact hits have none.
            "cache_similarity": outcome.cache_similarity,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cached_input_tokens": usage.cached_input_tokens if usage else None,
            "cache_write_input_tokens": usage.cache_write_input_tokens if usage else None,
            "reasoning_tokens": usage.reasoning_tokens if usage else None,
            "usage_reported": usage.reported if usage else None,
            "cost_usd": outcome.cost,
            "ttft_ms": None if outcome.ttfc is None else round(outcome.ttfc * 1000, 3),
            "duration_ms": round(outcome.duration * 1000, 3),
            "response_id": truncate(start.id) if start is not None and start.id else None,
            "trace_id": _trace_id(self.span),
        }


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the pipeline decided about a call, as its span, metrics and
    access line report it."""

    operation: Operation
    route: str  # the route that served it, else the one asked for
    key_name: str | None
    target: Target | None  # the target that answered
    attempts: int
    cost: float | None  # USD, priced once by the pipeline
    upstream_seconds: float  # waiting on upstreams and backing off


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a finished call came to."""

    duration: float
    status: Status | None
    error: GatewayError | None
    operation: str | None
    route: str | None
    key_name: str | None
    cache_hit: bool | None
    cache_similarity: float | None
    target: Target | None
    variant: str | None
    attempts: int | None
    usage: Usage | None
    cost: float | None
    ttfc: float | None

    @property
    def status_name(self) -> str:
        return "OK" if self.status is None else self.status.value

    @property
    def error_type(self) -> str | None:
        if self.error is not None:
            return self.error.reason
        return None if self.status is None else self.status.value


def _present(attributes: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    return {name: value for name, value in attributes.items() if value is not None}


def _grpc_code(status: Status | None) -> int:
    code: int = (grpc.StatusCode.OK if status is None else grpc.StatusCode[status.value]).value[0]
    return code


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _timestamp(seconds: float) -> str:
    """RFC 3339 UTC to the millisecond. The calls of one second share the
    formatting of its date and time: only the milliseconds are new."""
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1_000_000)  # as datetime.fromtimestamp rounds
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    return f"{_second(int(whole))}.{micros // 1000:03d}Z"


def _trace_id(span: Span) -> str | None:
    context = span.get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None
