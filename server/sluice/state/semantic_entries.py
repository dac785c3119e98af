"""The semantic cache's entries as the shared state keeps them
(`SemanticEntryStore` in base.py), and the memory backend's store.

An entry's stored form: `[route, partition, key]` as JSON, a newline (JSON
escapes those in strings), then the vector's float32 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import numpy as np

from sluice.semantic_index import SemanticEntry
from sluice.state.base import StateWait


def encode_entry(entry: SemanticEntry) -> bytes:
    header = json.dumps([entry.route, entry.partition, entry.key], ensure_ascii=False)
    return header.encode() + b"\n" + entry.vector.astype("<f4").tobytes()


def decode_entry(data: bytes) -> SemanticEntry:
    """The entry `encode_entry` stored; ValueError if `data` is not one."""
    header, _, vector = data.partition(b"\n")
    try:
        route, partition, key = json.loads(header)
    except (TypeError, ValueError):
        raise ValueError("malformed semantic entry") from None
    if not all(isinstance(part, str) for part in (route, partition, key)):
        raise ValueError("malformed semantic entry")
    if not vector or len(vector) % 4:
        raise ValueError("semantic entry without a float32 vector")
    return SemanticEntry(route, partition, key, np.frombuffer(vector, dtype="<f4").copy())


class LocalSemanticEntries:
    """The memory backend's: one process, nothing to share."""

    async def share(
        self, entry: SemanticEntry, ttl: float, max_entries: int, *, within: StateWait | None = None
    ) -> None:
        return

    async def entries(self, route: str, max_entries: int) -> list[SemanticEntry]:
        return []

    async def follow(
        self, learn: Callable[[SemanticEntry], None], ready: Callable[[], Awaitable[None]]
    ) -> None:
        await ready()
