"""The semantic index: nearest by cosine within a partition, LRU-bounded."""

from __future__ import annotations

import numpy as np

from sluice.api.request_bounds import MAX_DIMENSIONS
from sluice.semantic_index import EXACT_ROWS, SemanticIndex, SemanticIndexes, normalised


def unit(*values: float) -> np.ndarray:
    vector = normalised(values)
    assert vector is not None
    return vector


def test_the_nearest_entry_of_the_partition_only() -> None:
    index = SemanticIndex(10)
    index.add("p", "north", unit(0, 1))
    index.add("p", "east", unit(1, 0))
    index.add("q", "exactly", unit(1, 1))
    match = index.nearest("p", unit(1, 1))
    assert match is not None
    assert match.key in {"north", "east"}
    assert abs(match.similarity - np.sqrt(0.5)) < 1e-6
    assert index.nearest("r", unit(1, 1)) is None


def test_similarity_is_clamped_and_no_direction_is_refused() -> None:
    index = SemanticIndex(10)
    index.add("p", "east", unit(1, 0))
    match = index.nearest("p", unit(-1, 0))
    assert match is not None
    assert match.similarity == 0.0
    assert normalised((0.0, 0.0)) is None
    assert normalised((float("nan"), 1.0)) is None


def test_least_recently_used_is_evicted_at_max_entries() -> None:
    index = SemanticIndex(2)
    index.add("p", "a", unit(1, 0, 0))
    index.add("p", "b", unit(0, 1, 0))
    index.nearest("p", unit(1, 0, 0))  # uses a: b is now the oldest
    index.add("q", "c", unit(0, 0, 1))
    assert len(index) == 2
    only_a = index.nearest("p", unit(0, 1, 0))
    assert only_a is not None
    assert only_a.key == "a"


def test_many_entries_grow_and_shrink_and_stay_findable() -> None:
    index = SemanticIndex(1000)
    rng = np.random.default_rng(7)
    vectors = {f"k{i}": unit(*rng.standard_normal(16)) for i in range(300)}
    for key, vector in vectors.items():
        index.add("p", key, vector)
    for key in list(vectors)[:290]:
        index.remove(key)
        del vectors[key]
    for key, vector in vectors.items():
        match = index.nearest("p", vector)
        assert match is not None
        assert match.key == key


def test_new_dimensions_replace_a_partitions_entries() -> None:
    index = SemanticIndex(10)
    index.add("p", "old", unit(1, 0))
    assert index.nearest("p", unit(1, 0, 0)) is None
    index.add("p", "new", unit(1, 0, 0))
    assert len(index) == 1


def test_a_reload_keeps_a_routes_index_and_applies_its_new_bound() -> None:
    indexes = SemanticIndexes()
    index = indexes.of("chat", 3)
    for key in "abc":
        index.add("p", key, unit(1, 0))
    assert indexes.of("chat", 2) is index
    assert len(index) == 2


def _unit_rows(rng: np.random.Generator, count: int, dims: int) -> np.ndarray:
    rows = rng.standard_normal((count, dims), dtype=np.float32)
    unit_rows: np.ndarray = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit_rows


def _paraphrase(rng: np.random.Generator, vector: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at exactly `cosine` to `vector`."""
    other = rng.standard_normal(len(vector)).astype(np.float32)
    other -= (other @ vector) * vector
    other /= np.linalg.norm(other)
    near: np.ndarray = (cosine * vector + np.sqrt(1 - cosine**2) * other).astype(np.float32)
    return near


def test_above_the_exact_bound_the_sketch_prefilter_still_finds_paraphrases() -> None:
    rng = np.random.default_rng(11)
    vectors = _unit_rows(rng, EXACT_ROWS + 1000, 128)
    index = SemanticIndex(len(vectors))
    for i, vector in enumerate(vectors):
        index.add("p", f"k{i}", vector)
    for i in rng.choice(len(vectors), 60, replace=False):
        query = _paraphrase(rng, vectors[i], 0.85)
        match = index.nearest("p", query)
        assert match is not None
        assert match.key == f"k{i}"
        assert abs(match.similarity - 0.85) < 1e-4


def test_sketches_follow_their_entries_through_removal_and_shrinking() -> None:
    rng = np.random.default_rng(12)
    vectors = _unit_rows(rng, 4 * EXACT_ROWS + 500, 64)
    index = SemanticIndex(len(vectors))
    for i, vector in enumerate(vectors):
        index.add("p", f"k{i}", vector)
    kept = 2 * EXACT_ROWS  # a quarter of the matrix's rows: it shrinks
    for i in range(len(vectors) - kept):
        index.remove(f"k{i}")
    for i in rng.choice(np.arange(len(vectors) - kept, len(vectors)), 60, replace=False):
        match = index.nearest("p", vectors[i])
        assert match is not None
        assert match.key == f"k{i}"


def test_many_equal_sketches_do_not_hide_the_nearest_entry() -> None:
    index = SemanticIndex(10_000)
    same = unit(1, 0, 0, 0)
    for i in range(EXACT_ROWS + 500):
        index.add("p", f"same{i}", same)
    index.add("p", "apart", unit(0, 1, 0, 0))
    match = index.nearest("p", unit(0.1, 1, 0, 0))
    assert match is not None
    assert match.key == "apart"
    near_same = index.nearest("p", unit(1, 0.1, 0, 0))
    assert near_same is not None
    assert near_same.key.startswith("same")


def test_a_vector_longer_than_any_request_may_ask_for_is_refused() -> None:
    assert normalised([1.0] * (MAX_DIMENSIONS + 1)) is None
    assert normalised([1.0] * 8) is not None
