"""The semantic cache's index: which stored answer's question is nearest.

In memory, per replica. An entry is an exact cache key (the stored answer
lives in the response cache under it) and the embedding of its question,
in a partition (semantic_key.py): a lookup compares only entries of the
query's partition. Vectors are kept L2-normalised as float32, one matrix per
partition. Up to EXACT_ROWS entries a lookup is one matrix-vector product
(exact). Above, reading every vector costs too much (100,000 x 1,536 floats
is 614 MB: ~50 ms), so each entry also keeps a 128-bit sign sketch of its
vector (random hyperplanes, SimHash): the Hamming distance of sketches
tracks the angle between vectors, and the CANDIDATES entries whose sketches
are nearest the query's are compared exactly. A paraphrase at cosine 0.8 or
more differs in ~26 of 128 bits, an unrelated entry in ~64: the prefilter
keeps it (bench/semantic.py reports recall@1 against exact search).

Bounded by `max_entries` across all partitions, least recently used (added
or hit) evicted first. A partition's matrix grows by doubling and shrinks
when a quarter full, so memory stays within about twice the entries' vectors.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from sluice.api.request_bounds import MAX_DIMENSIONS

Vector = npt.NDArray[np.float32]
Sketches = npt.NDArray[np.uint64]
_MIN_ROWS = 8
# At most this many entries: exact search. Reading 512 vectors of 1,536 floats
# (3 MB) costs about what the prefilter does; more cost more, cold.
EXACT_ROWS = 512
CANDIDATES = 64  # compared exactly after the sketch prefilter
_SKETCH_WORDS = 2  # 128 bits
SKETCH_BYTES = 8 * _SKETCH_WORDS
_HYPERPLANES_SEED = 0x5E3A47C5


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
    """`values` as a unit float32 vector; None when it has no direction or
    more dimensions than any request may ask for (the upstream chose them)."""
    if len(values) > MAX_DIMENSIONS:
        return None
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if vector.ndim != 1 or not np.isfinite(norm) or norm == 0.0:
        return None
    return vector / np.float32(norm)


@lru_cache(maxsize=4)  # dims x 512 B each; a config uses one or two models
def _hyperplanes(dims: int) -> Vector:
    """The random hyperplanes the sketches of `dims`-long vectors are cut by."""
    rng = np.random.default_rng(_HYPERPLANES_SEED)
    planes = rng.standard_normal((dims, 64 * _SKETCH_WORDS), dtype=np.float32)
    planes.flags.writeable = False
    return planes


def _sketch(vector: Vector) -> Sketches:
    """Which side of each hyperplane `vector` lies on, as _SKETCH_WORDS words."""
    sides = vector @ _hyperplanes(len(vector)) > 0
    return np.packbits(sides).view(np.uint64)


class _Partition:
    """The entries of one partition: row i of `matrix` is `keys[i]`'s vector,
    column i of `sketches` its sketch (a column per entry, so that each word
    of every entry's sketch is one contiguous row to scan)."""

    __slots__ = ("keys", "matrix", "rows", "sketches")

    def __init__(self, dims: int) -> None:
        self.matrix: Vector = np.empty((_MIN_ROWS, dims), dtype=np.float32)
        self.sketches: Sketches = np.empty((_SKETCH_WORDS, _MIN_ROWS), dtype=np.uint64)
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
        self.sketches[:, row] = _sketch(vector)

    def remove(self, key: str) -> None:
        row = self.rows.pop(key)
        last = len(self.keys) - 1
        moved = self.keys.pop()
        if row != last:  # the last row fills the gap
            self.keys[row] = moved
            self.rows[moved] = row
            self.matrix[row] = self.matrix[last]
            self.sketches[:, row] = self.sketches[:, last]
        if len(self.matrix) > _MIN_ROWS and 4 * len(self.keys) <= len(self.matrix):
            self._resize(len(self.matrix) // 2)

    def nearest(self, vector: Vector) -> tuple[str, float]:
        count = len(self.keys)
        if count <= EXACT_ROWS:
            similarities = self.matrix[:count] @ vector
            row = int(np.argmax(similarities))
            return self.keys[row], float(similarities[row])
        rows = self._candidates(vector, count)
        similarities = self.matrix[rows] @ vector
        best = int(np.argmax(similarities))
        return self.keys[int(rows[best])], float(similarities[best])

    def _candidates(self, vector: Vector, count: int) -> npt.NDArray[np.intp]:
        """The rows whose sketches are nearest `vector`'s: CANDIDATES of
        them, more when several lie at the cutoff distance."""
        query = _sketch(vector)
        distances = np.bitwise_count(self.sketches[0, :count] ^ query[0]).astype(np.uint16)
        for word in range(1, _SKETCH_WORDS):
            distances += np.bitwise_count(self.sketches[word, :count] ^ query[word])
        # The CANDIDATES-th smallest distance (a selection, not a sort: 30 us
        # for 100,000 uint16), then every row within it.
        cutoff = np.partition(distances, CANDIDATES - 1)[CANDIDATES - 1]
        rows = np.flatnonzero(distances <= cutoff)
        if len(rows) > 4 * CANDIDATES:  # many ties at the cutoff (e.g. repeated vectors)
            rows = rows[np.argpartition(distances[rows], CANDIDATES - 1)[:CANDIDATES]]
        return rows

    def _resize(self, rows: int) -> None:
        count = len(self.keys)
        matrix = np.empty((rows, self.dims), dtype=np.float32)
        matrix[:count] = self.matrix[:count]
        sketches = np.empty((_SKETCH_WORDS, rows), dtype=np.uint64)
        sketches[:, :count] = self.sketches[:, :count]
        self.matrix, self.sketches = matrix, sketches


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
