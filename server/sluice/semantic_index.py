"""The semantic cache's index: which stored answer's question is nearest.

In memory, per replica. An entry is an exact cache key (the stored answer
lives in the response cache under it) and the embedding of its question,
in a partition (semantic_key.py): a lookup compares only entries of the
query's partition. Vectors are kept L2-normalised as float32, one matrix per
partition, so a lookup is one matrix-vector product: exact search (recall@1
is 1), its cost linear in the partition's size (bench/semantic.py).

Bounded by `max_entries` across all partitions, least recently used (added
or hit) evicted first. A partition's matrix grows by doubling and shrinks
when a quarter full, so memory stays within about twice the entries' vectors.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
_MIN_ROWS = 8


@dataclass(frozen=True, slots=True)
class Match:
    key: str  # the exact cache key of the stored answer
    similarity: float  # cosine, clamped to [0, 1]


@dataclass(frozen=True, slots=True)
class SemanticEntry:
    """An entry as replicas share it (state/semantic_entries.py)."""

    route: str
    partition: str
    key: str  # the exact cache key of the stored answer
    vector: Vector


def normalised(values: Sequence[float]) -> Vector | None:
    """`values` as a unit float32 vector; None when it has no direction."""
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if vector.ndim != 1 or not np.isfinite(norm) or norm == 0.0:
        return None
    return vector / np.float32(norm)


class _Partition:
    """The entries of one partition: row i of `matrix` is `keys[i]`'s vector."""

    __slots__ = ("keys", "matrix", "rows")

    def __init__(self, dims: int) -> None:
        self.matrix: Vector = np.empty((_MIN_ROWS, dims), dtype=np.float32)
        self.keys: list[str] = []
        self.rows: dict[str, int] = {}

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[1])

    def add(self, key: str, vector: Vector) -> None:
        row = self.rows.get(key)
        if row is None:
            row = len(self.keys)
            if row == len(self.matrix):
                self._resize(2 * row)
            self.keys.append(key)
            self.rows[key] = row
        self.matrix[row] = vector

    def remove(self, key: str) -> None:
        row = self.rows.pop(key)
        last = len(self.keys) - 1
        moved = self.keys.pop()
        if row != last:  # the last row fills the gap
            self.keys[row] = moved
            self.rows[moved] = row
            self.matrix[row] = self.matrix[last]
        if len(self.matrix) > _MIN_ROWS and 4 * len(self.keys) <= len(self.matrix):
            self._resize(len(self.matrix) // 2)

    def nearest(self, vector: Vector) -> tuple[str, float]:
        similarities = self.matrix[: len(self.keys)] @ vector
        row = int(np.argmax(similarities))
        return self.keys[row], float(similarities[row])

    def _resize(self, rows: int) -> None:
        matrix = np.empty((rows, self.dims), dtype=np.float32)
        matrix[: len(self.keys)] = self.matrix[: len(self.keys)]
        self.matrix = matrix


class SemanticIndex:
    """One route's index, bounded by `max_entries` (which `resize` changes)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._partitions: dict[str, _Partition] = {}
        # Exact key -> its partition, least recently used first.
        self._used: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._used)

    def nearest(self, partition: str, vector: Vector) -> Match | None:
        """The entry of `partition` nearest `vector`, now the most recently used."""
        entries = self._partitions.get(partition)
        if entries is None or entries.dims != len(vector):
            return None
        key, similarity = entries.nearest(vector)
        self._used.move_to_end(key)
        return Match(key, min(1.0, max(0.0, similarity)))

    def add(self, partition: str, key: str, vector: Vector) -> None:
        entries = self._partitions.get(partition)
        if entries is None or entries.dims != len(vector):
            # A new partition, or its embeddings model changed dimensions:
            # the old vectors cannot be compared with the new.
            if entries is not None:
                for old in list(entries.keys):
                    self.remove(old)
            entries = self._partitions[partition] = _Partition(len(vector))
        entries.add(key, vector)
        self._used[key] = partition
        self._used.move_to_end(key)
        self._evict()

    def remove(self, key: str) -> None:
        partition = self._used.pop(key, None)
        if partition is None:
            return
        entries = self._partitions[partition]
        entries.remove(key)
        if not entries.keys:
            del self._partitions[partition]

    def resize(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._evict()

    def _evict(self) -> None:
        while len(self._used) > self.max_entries:
            self.remove(next(iter(self._used)))


class SemanticIndexes:
    """Every route's index, kept across config reloads by the gateway."""

    def __init__(self) -> None:
        self._indexes: dict[str, SemanticIndex] = {}

    def of(self, route: str, max_entries: int) -> SemanticIndex:
        index = self._indexes.get(route)
        if index is None:
            index = self._indexes[route] = SemanticIndex(max_entries)
        elif index.max_entries != max_entries:
            index.resize(max_entries)
        return index
