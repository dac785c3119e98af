"""Finished spans as an OTLP `ExportTraceServiceRequest`, in protobuf wire
format written directly.

The SDK's encoder builds a protobuf object for every span, attribute and
value (44 µs a span of ours, of 15 attributes); writing the bytes, with the
attribute values that repeat kept encoded, is a sixth of that (7.5 µs), and
it runs for every span exported, on the gateway's core. Same message, field
for field (tests/unit/telemetry/test_otlp_spans.py compares it with the SDK's
encoder); sans-I/O: `GrpcSpanExporter` in `setup.py` sends what this returns.

Field numbers are those of opentelemetry/proto/trace/v1/trace.proto,
common/v1/common.proto and resource/v1/resource.proto.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.util.types import Attributes

_logger = logging.getLogger(__name__)

_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
# Span's start and end times: fixed64 fields 7 and 8, tags and all in one pack.
_TIMES = struct.Struct("<BQBQ").pack
_INT64 = 1 << 63
_UINT64_MASK = (1 << 64) - 1

# Span.kind, whose values count from 1 in the proto.
_KINDS = {kind: bytes((0x30, kind.value + 1)) for kind in SpanKind}
# Span.flags and Link.flags, by whether the parent was remote: its remoteness
# is known (0x100), and whether it was remote (0x200).
_FLAGS = (_FIXED32(0x100), _FIXED32(0x300))


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The request exporting `spans`, grouped by resource, then scope."""
    groups: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]]
    groups = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        scopes = groups.setdefault(id(resource), (resource, {}))[1]
        scopes.setdefault(id(scope), (scope, []))[1].append(_span(span))
    parts: list[bytes] = []
    for resource, scopes in groups.values():
        parts += _resource_spans(resource, scopes.values())
    return b"".join(parts)


def _resource_spans(
    resource: Resource, scopes: Iterable[tuple[InstrumentationScope | None, list[bytes]]]
) -> list[bytes]:
    """The request's resource_spans field of `resource`, as parts."""
    parts = [_field(1, _attributes(1, resource.attributes))]
    for scope, encoded in scopes:
        scope_parts = [_field(1, _scope(scope)), *encoded]
        if scope is not None and scope.schema_url:
            scope_parts.append(_field(3, scope.schema_url.encode()))
        parts += _message(2, scope_parts)
    if resource.schema_url:
        parts.append(_field(3, resource.schema_url.encode()))
    return _message(1, parts)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    parts = [_field(1, scope.name.encode()) if scope.name else b""]
    if scope.version:
        parts.append(_field(2, scope.version.encode()))
    parts.append(_attributes(3, scope.attributes))
    return b"".join(parts)


def _span(span: ReadableSpan) -> bytes:
    """`span` as a ScopeSpans.spans field."""
    context = span.context
    assert context is not None  # a finished span always has one
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
        parts.append(_field(3, state.encode()))
    parent = span.parent
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    parts += (
        _field(5, span.name.encode()),
        _KINDS[span.kind],
        _TIMES(0x39, span.start_time or 0, 0x41, span.end_time or 0),
        _attributes(9, span.attributes),
    )
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:  # a loop: a generator costs 0.2 µs when there are none
        parts.append(_event(event))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        parts.append(_field(13, _link(link.context, link.attributes, link.dropped_attributes)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    parts += (_status(span), b"\x85\x01", _flags(parent))
    return _field(2, b"".join(parts))


def _event(event: Event) -> bytes:
    body = b"\x09" + _FIXED64(event.timestamp) + _field(2, event.name.encode())
    body += _attributes(3, event.attributes)
    if event.dropped_attributes:
        body += b"\x20" + _varint(event.dropped_attributes)
    return _field(11, body)


def _link(context: SpanContext, attributes: Attributes, dropped: int) -> bytes:
    body = b"\x0a\x10" + context.trace_id.to_bytes(16, "big")
    body += b"\x12\x08" + context.span_id.to_bytes(8, "big") + _attributes(4, attributes)
    if dropped:
        body += b"\x28" + _varint(dropped)
    return body + b"\x35" + _flags(context)


def _status(span: ReadableSpan) -> bytes:
    status = span.status
    if status.description:
        return _status_field(status.status_code, status.description)
    return _STATUSES[status.status_code]


def _status_field(code: StatusCode, description: str | None) -> bytes:
    """Span.status; an unset one still goes out, as an empty message, as the
    SDK sends it."""
    body = _field(2, description.encode()) if description else b""
    if code.value:
        body += b"\x18" + _varint(code.value)
    return _field(15, body)


def _flags(parent: SpanContext | None) -> bytes:
    return _FLAGS[parent is not None and parent.is_remote]


def _attributes(number: int, attributes: Attributes | Mapping[str, object]) -> bytes:
    """`attributes` as repeated KeyValue field `number`."""
    if not attributes:
        return b""
    parts = []
    for key, value in attributes.items():
        if type(value) is str:
            # A long string is never kept, and hashing it costs more than encoding it.
            long = len(value) > _MAX_CACHED_SIZE
            field = None if long else _FIELDS.get((number, key, str, value))
        else:
            kind = type(value)
            field = _FIELDS.get((number, key, kind, value)) if kind in _CACHED_TYPES else None
        parts.append(_key_value(number, key, value) if field is None else field)
    return b"".join(parts)


# Encoded KeyValue fields of the values that repeat from call to call
# (routes, models, providers, methods, statuses, ports). The key holds the
# value's type: True == 1 == 1.0 to a dict. Floats are not kept: 0.0 == -0.0
# too, and a float here is a measurement (a time, a cost) that seldom repeats.
# Per-call values (ids, token counts: about 4 a call) fill it, and it is
# emptied at 4096 fields: far above the few hundred that repeat, so these are
# encoded again only every several hundred calls; with fields of up to 256
# bytes (not messages or stack traces) it holds under 3 MB.
_FIELDS: dict[tuple[int, str, type, object], bytes] = {}
_CACHED_TYPES = frozenset((str, bool, int))
_MAX_FIELDS = 4096
_MAX_CACHED_SIZE = 256


def _key_value(number: int, key: str, value: object) -> bytes:
    """KeyValue field `number` of `key` and `value`; empty, and logged, for
    a value no OTLP type holds, as the SDK's encoder leaves it out."""
    try:
        pair = _key(key) + _field(2, _any_value(value))
    except (TypeError, ValueError) as error:
        _logger.warning("span attribute %s not exported: %s", key, error)
        return b""
    field = _TAG[number] + _varint(len(pair)) + pair
    kind = type(value)
    if kind in _CACHED_TYPES and len(field) <= _MAX_CACHED_SIZE:
        if len(_FIELDS) >= _MAX_FIELDS:
            _FIELDS.clear()
        _FIELDS[number, key, kind, value] = field
    return field


_KEYS: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    """KeyValue.key; attribute keys are few and repeat on every span."""
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = _field(1, key.encode())
        if len(_KEYS) < 1024:
            _KEYS[key] = encoded
    return encoded


def _any_value(value: object) -> bytes:
    """AnyValue's body (bool before int: a bool is an int to Python)."""
    if isinstance(value, str):
        encoded = value.encode()
        size = len(encoded)
        return b"\x0a" + (_SMALL[size] if size < 0x80 else _varint(size)) + encoded
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ValueError(f"{value} is out of int64's range")
        return b"\x18" + _varint(value & _UINT64_MASK)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if value is None:
        return b""
    if isinstance(value, Mapping):
        pairs = (_key(str(k)) + _field(2, _any_value(v)) for k, v in value.items())
        return _field(6, b"".join(_field(1, pair) for pair in pairs))
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    raise TypeError(f"no OTLP value holds a {type(value).__name__}")


def _message(number: int, parts: list[bytes]) -> list[bytes]:
    """Length-delimited field `number` of the message `parts` make, as parts:
    a request's spans are copied once more, by one join, not once a level."""
    return [_TAG[number], _varint(sum(map(len, parts))), *parts]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    size = len(payload)
    return _TAG[number] + (_SMALL[size] if size < 0x80 else _varint(size)) + payload


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    if value < 0x4000:  # a span's size: two bytes, without the loop
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]
# The tag of length-delimited field n (every such field here is below 16).
_TAG = [bytes((n << 3 | 2,)) for n in range(16)]
# The statuses without a description, those of nearly every span.
_STATUSES = {code: _status_field(code, None) for code in StatusCode}
