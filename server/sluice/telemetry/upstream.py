"""Spans and metrics of calls to upstream providers.

`UpstreamSpan` is one attempt: a CLIENT span named `{operation} {model}`
(`chat gpt-4o`, `text_completion ...`, `embeddings ...`) under the call's
span, open from the request to the stream's last chunk, with the GenAI
attributes, and the `gen_ai.client.*` metrics when it ends. `HttpSpan` is the
HTTP request under it, whose context travels to the upstream as
`traceparent`.

With `capture_content` on, the prompt and the answer are recorded in the
conventions' `gen_ai.input.messages` / `gen_ai.output.messages` /
`gen_ai.system_instructions` form (images by media type and size only); off,
no content is recorded at all.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

from sluice.domain import (
    ChatRequest,
    CompletionRequest,
    Embeddings,
    Event,
    Finish,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningPart,
    RedactedReasoning,
    Request,
    Role,
    Start,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from sluice.errors import GatewayError
from sluice.redaction import redact
from sluice.telemetry import semconv
from sluice.telemetry.core import Telemetry
from sluice.telemetry.spans import TRACE_CONTEXT, mark_failed
from sluice.truncation import truncate

if TYPE_CHECKING:
    from sluice.routes import Target

CANCELLED = "CANCELLED"


class UpstreamSpan:
    """One attempt at one target."""

    def __init__(
        self,
        telemetry: Telemetry,
        parent: Context | None,
        route: str,
        target: Target,
        request: Request,
        *,
        attempt: int,
        on_wait: Callable[[float], None] | None,
    ) -> None:
        self._telemetry = telemetry
        # What the attempt's events tell (waits, first chunk, usage) goes only
        # to its span and metrics: with neither, they are not looked at.
        self._watched = telemetry.tracing or telemetry.metering
        # Told each wait on the upstream; None for a shadow mirror, whose
        # waits are not its call's.
        self._on_wait = on_wait
        operation = semconv.OPERATION_NAMES[request.operation]
        self._labels: dict[str, Any] = {
            semconv.OPERATION_NAME: operation,
            semconv.PROVIDER_NAME: target.otel_provider,
            semconv.REQUEST_MODEL: target.model,
            semconv.ROUTE: route,
        }
        if on_wait is None:  # kept apart in metrics too: mirrors are not the callers' traffic
            self._labels[semconv.SHADOW] = True
        if telemetry.tracing:
            self.span = telemetry.tracer.start_span(
                f"{operation} {target.model}",
                context=parent,
                kind=SpanKind.CLIENT,
                attributes=self._attributes(attempt, target, request),
            )
            self.context: Context | None = trace.set_span_in_context(self.span)
        else:
            # No span: the HTTP request carries the call's context as it came.
            self.span, self.context = INVALID_SPAN, parent
        self._capture = telemetry.capture_content and self.span.is_recording()
        if self._capture:
            self.span.set_attributes(_input_attributes(request))
        self._output: list[dict[str, Any]] = []
        self._started = time.monotonic()
        # Waiting for the upstream since (unwatched: never counted).
        self._awaiting: float | None = self._started if self._watched else None
        self._first_chunk: float | None = None
        self._response_model = ""
        self._usage: Usage | None = None
        self._finish: Finish | None = None
        self._ended = False

    def _attributes(self, attempt: int, target: Target, request: Request) -> dict[str, Any]:
        attributes = {
            **self._labels,
            semconv.ATTEMPT: attempt,
            semconv.TARGET: target.label,
            semconv.TARGET_INDEX: target.index,
            semconv.VARIANT: target.variant,
        }
        if isinstance(request, ChatRequest | CompletionRequest):
            attributes.update(semconv.request_parameters(request.generation))
        elif request.dimensions is not None:
            attributes[semconv.EMBEDDINGS_DIMENSION_COUNT] = request.dimensions
        return attributes

    def received(self, event: Event) -> None:
        """`event` arrived from the upstream: the wait for it is over."""
        if self._watched:
            self._stop_waiting()
            self._observe(event)

    def awaiting(self) -> None:
        """The attempt waits on the upstream again (its last event passed on)."""
        if self._watched:
            self._awaiting = time.monotonic()

    def _stop_waiting(self) -> None:
        if self._awaiting is not None:
            if self._on_wait is not None:
                self._on_wait(time.monotonic() - self._awaiting)
            self._awaiting = None

    def http(self, method: str, url: str) -> HttpSpan:
        """A span for one HTTP request of this attempt."""
        telemetry = self._telemetry
        return HttpSpan(telemetry.tracer, self.context, method, url, traced=telemetry.tracing)

    def end(self, error: GatewayError | None = None, *, cancelled: bool = False) -> None:
        """End the attempt (once): failed with `error`, abandoned when
        `cancelled`, else succeeded."""
        if self._ended:
            return
        self._ended = True
        self._stop_waiting()
        duration = time.monotonic() - self._started
        labels = dict(self._labels)
        if self._response_model:
            labels[semconv.RESPONSE_MODEL] = self._response_model
        error_type = error.reason if error is not None else (CANCELLED if cancelled else None)
        if error_type is not None:
            labels[semconv.ERROR_TYPE] = error_type
            mark_failed(self.span, error_type, error.message if error is not None else "")
        if self._telemetry.tracing:
            self._end_span()
        if self._telemetry.metering:
            self._record(duration, labels)

    def _end_span(self) -> None:
        span, finish = self.span, self._finish
        if finish is not None:
            span.set_attribute(semconv.RESPONSE_FINISH_REASONS, [finish.reason.value])
        if self._usage is not None:
            span.set_attributes(semconv.usage_attributes(self._usage))
        if self._capture and self._output:
            message: dict[str, Any] = {"role": "assistant", "parts": self._output}
            if finish is not None:
                message["finish_reason"] = finish.reason.value
            span.set_attribute(semconv.OUTPUT_MESSAGES, _json([message]))
        span.end()

    def _record(self, duration: float, labels: dict[str, Any]) -> None:
        instruments, usage = self._telemetry.instruments, self._usage
        instruments.operation_duration.record(duration, labels)
        if self._first_chunk is not None:
            instruments.upstream_first_chunk.record(self._first_chunk - self._started, labels)
        if usage is not None and usage.reported:
            for token_type, count in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ):
                instruments.token_usage.record(count, {**labels, semconv.TOKEN_TYPE: token_type})

    def _observe(self, event: Event) -> None:
        if isinstance(event, TextDelta | ReasoningDelta | ToolCallDelta):
            if self._first_chunk is None:
                self._note_first_chunk()
            if self._capture:
                self._capture_delta(event)
        elif isinstance(event, Start):
            # The upstream's strings, of the upstream's length.
            self._response_model = truncate(event.model)
            if event.id:
                self.span.set_attribute(semconv.RESPONSE_ID, truncate(event.id))
            if event.model:
                self.span.set_attribute(semconv.RESPONSE_MODEL, self._response_model)
        elif isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, Finish):
            self._finish = event
        elif isinstance(event, Embeddings | RedactedReasoning) and self._first_chunk is None:
            self._note_first_chunk()

    def _note_first_chunk(self) -> None:
        self._first_chunk = time.monotonic()
        self.span.set_attribute(
            semconv.RESPONSE_TIME_TO_FIRST_CHUNK, self._first_chunk - self._started
        )

    def _capture_delta(self, event: TextDelta | ReasoningDelta | ToolCallDelta) -> None:
        """Fold a delta into the captured answer's parts."""
        output = self._output
        if isinstance(event, ToolCallDelta):
            if event.id or event.name or not output or output[-1]["type"] != "tool_call":
                output.append(
                    {"type": "tool_call", "id": event.id, "name": event.name, "arguments": ""}
                )
            output[-1]["arguments"] += event.arguments
            return
        kind = "text" if isinstance(event, TextDelta) else "reasoning"
        if output and output[-1]["type"] == kind:
            output[-1]["content"] += event.text
        else:
            output.append({"type": kind, "content": event.text})


@functools.lru_cache(maxsize=256)
def _http_attributes(method: str, url: str) -> Mapping[str, AttributeValue]:
    """An HTTP span's attributes: a target sends every request to the same
    URL, so each is parsed once, not per call."""
    parsed = urlsplit(url)
    attributes: dict[str, AttributeValue] = {
        semconv.HTTP_REQUEST_METHOD: method,
        semconv.SERVER_ADDRESS: parsed.hostname or "",
        # The query is left out: some providers take their key there.
        semconv.URL_FULL: urlunsplit((parsed.scheme, parsed.netloc, parsed.path, "", "")),
    }
    if parsed.port is not None:
        attributes[semconv.SERVER_PORT] = parsed.port
    return MappingProxyType(attributes)  # shared: read-only


class HttpSpan:
    """One HTTP request of an attempt (kind CLIENT), ended by `end`."""

    def __init__(
        self, tracer: Tracer, parent: Context | None, method: str, url: str, *, traced: bool
    ) -> None:
        if not traced:
            # No span: the request carries `parent` (the caller's context) as it came.
            self.span: Span = INVALID_SPAN
            self._context = parent
            return
        self.span = tracer.start_span(
            method, context=parent, kind=SpanKind.CLIENT, attributes=_http_attributes(method, url)
        )
        self._context = trace.set_span_in_context(self.span)

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """`headers` with this request's `traceparent` added, if it has one."""
        carrier = dict(headers)
        if self._context is not None:
            TRACE_CONTEXT.inject(carrier, context=self._context)
        return carrier

    def response(self, status_code: int) -> None:
        self.span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, status_code)
        if status_code >= 400:
            mark_failed(self.span, str(status_code))

    def end(self, error: BaseException | None = None) -> None:
        if isinstance(error, GatewayError):
            mark_failed(self.span, error.reason, error.message)
        elif isinstance(error, GeneratorExit | asyncio.CancelledError):
            mark_failed(self.span, CANCELLED)
        elif error is not None:
            mark_failed(self.span, type(error).__name__)
        self.span.end()


# --- content capture ---------------------------------------------------------------


def _input_attributes(request: Request) -> dict[str, str]:
    if isinstance(request, ChatRequest):
        system = [
            _part(part)
            for message in request.messages
            if message.role is Role.SYSTEM
            for part in message.parts
        ]
        attributes = {
            semconv.INPUT_MESSAGES: _json(
                [_message(m) for m in request.messages if m.role is not Role.SYSTEM]
            )
        }
        if system:
            attributes[semconv.SYSTEM_INSTRUCTIONS] = _json(system)
        return attributes
    if isinstance(request, CompletionRequest):
        parts = [{"type": "text", "content": request.prompt}]
        return {semconv.INPUT_MESSAGES: _json([{"role": "user", "parts": parts}])}
    parts = [{"type": "text", "content": text} for text in request.inputs]
    return {semconv.INPUT_MESSAGES: _json([{"role": "user", "parts": parts}])}


def _message(message: Message) -> dict[str, Any]:
    return {"role": message.role.value, "parts": [_part(part) for part in message.parts]}


def _part(part: Any) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "content": part.text}
    if isinstance(part, ToolCallPart):
        return {"type": "tool_call", "id": part.id, "name": part.name, "arguments": part.arguments}
    if isinstance(part, ToolResultPart):
        return {"type": "tool_call_response", "id": part.tool_call_id, "response": part.content}
    if isinstance(part, ReasoningPart):
        # Signatures and redacted data are opaque: only the readable text is content.
        return {"type": "reasoning", "content": part.text}
    assert isinstance(part, ImagePart)
    if part.url:
        return {"type": "uri", "modality": "image", "uri": part.url}
    return {
        "type": "blob",
        "modality": "image",
        "mime_type": part.media_type,
        "size": len(part.data),
    }


def _json(value: object) -> str:
    return redact(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
