"""The semantic index: nearest by cosine within a partition, LRU-bounded."""

from __future__ import annotations

import numpy as np

from sluice.semantic_index import SemanticIndex, SemanticIndexes, normalised


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
