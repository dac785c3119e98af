"""The stored form of a cached answer: its events as versioned JSON.

`{"v":1,"events":[[tag,{field:value}],...]}`, fields at their default left
out. Bump `ENTRY_VERSION` when the format changes: entries of another
version then read as unreadable, which the cache treats as a miss.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from sluice.domain import (
    Embeddings,
    Event,
    Finish,
    FinishReason,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    Start,
    TextDelta,
    ToolCallDelta,
    Usage,
)

ENTRY_VERSION = 1
_TAGS: dict[type[Any], str] = {
    Start: "start",
    TextDelta: "text",
    ReasoningDelta: "reasoning",
    ReasoningSignature: "reasoning_signature",
    RedactedReasoning: "reasoning_redacted",
    ToolCallDelta: "tool_call",
    Embeddings: "embeddings",
    Usage: "usage",
    Finish: "finish",
}
_TYPES = {tag: cls for cls, tag in _TAGS.items()}


def encode_events(events: Sequence[Event]) -> bytes:
    return json.dumps(
        {"v": ENTRY_VERSION, "events": [[_TAGS[type(e)], _changed_fields(e)] for e in events]},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def decode_events(data: bytes) -> tuple[Event, ...]:
    """The events `encode_events` stored; ValueError if `data` is not such an
    entry of this version."""
    try:
        entry = json.loads(data)
        if entry["v"] != ENTRY_VERSION:
            raise ValueError(f"cache entry version {entry['v']!r}")
        return tuple(_event(tag, fields) for tag, fields in entry["events"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"malformed cache entry: {error!r}") from None


def _changed_fields(event: Event) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if value != field.default:
            fields[field.name] = value.value if isinstance(value, FinishReason) else value
    return fields


def _event(tag: str, fields: dict[str, Any]) -> Event:
    if tag == "finish":
        fields["reason"] = FinishReason(fields["reason"])
    elif tag == "embeddings":
        fields["vectors"] = tuple(tuple(vector) for vector in fields["vectors"])
    event: Event = _TYPES[tag](**fields)
    return event
