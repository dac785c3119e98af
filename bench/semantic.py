"""The semantic cache's lookup, embedding excluded: `python -m bench.semantic`.

Fills one partition of a `SemanticIndex` (the worst case: every entry in the
query's partition) with unit vectors of two kinds, and times `nearest` for
paraphrase-like queries: unit vectors at a set cosine to a stored entry
(--cosines, the range a semantic cache's threshold sits in). Per kind it
reports lookup p50/p99 over every query, recall@1 per cosine against exact
search (every stored vector compared), and memory per entry (the index's
arrays, and all the index allocated while filling it, by tracemalloc), and
the cost of an add into the full index (it evicts the oldest entry).

- `uniform`: random directions, no structure; every other entry is far.
- `topics`: entries around --topics centres (each entry 0.9 of its centre's
  direction), so an entry's topic neighbours sit at cosine ~0.8 to it: the
  crowded neighbourhood real embeddings of related questions make.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import numpy.typing as npt

from sluice.semantic_index import SKETCH_BYTES, SemanticIndex

Matrix = npt.NDArray[np.float32]
_TOPIC_WEIGHT = 0.9
_ADDS = 1000


def _unit_rows(rows: Matrix) -> Matrix:
    unit: Matrix = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit


def _entries(kind: str, args: argparse.Namespace, rng: np.random.Generator) -> Matrix:
    noise = _unit_rows(rng.standard_normal((args.entries, args.dims), dtype=np.float32))
    if kind == "uniform":
        return noise
    centres = _unit_rows(rng.standard_normal((args.topics, args.dims), dtype=np.float32))
    topic = centres[rng.integers(args.topics, size=args.entries)]
    spread = np.float32(np.sqrt(1 - _TOPIC_WEIGHT**2))
    return _unit_rows(np.float32(_TOPIC_WEIGHT) * topic + spread * noise)


def _at_cosine(rng: np.random.Generator, vector: Matrix, cosine: float) -> Matrix:
    """A unit vector at exactly `cosine` to the unit `vector`."""
    other = rng.standard_normal(len(vector)).astype(np.float32)
    other -= (other @ vector) * vector
    other /= np.linalg.norm(other)
    query: Matrix = (cosine * vector + np.sqrt(1 - cosine**2) * other).astype(np.float32)
    return query


def _measure(kind: str, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(1)
    vectors = _entries(kind, args, rng)
    index = SemanticIndex(args.entries)
    tracemalloc.start()
    for i, vector in enumerate(vectors):
        index.add("p", f"k{i}", vector)
    allocated = tracemalloc.get_traced_memory()[0] / args.entries
    tracemalloc.stop()
    cosines = np.repeat(args.cosines, args.queries)
    sources = rng.integers(args.entries, size=len(cosines))
    queries = [_at_cosine(rng, vectors[i], c) for i, c in zip(sources, cosines, strict=True)]
    # Exact search: every stored vector compared. Run before each cold
    # lookup, it also evicts the index from the CPU caches.
    truths = [int(np.argmax(vectors @ query)) for query in queries]
    warm, _ = _lookups(index, queries, evict=None)
    cold, found = _lookups(index, queries, evict=vectors)
    hits = np.array([key == f"k{truth}" for key, truth in zip(found, truths, strict=True)])
    recalls = [f"{cosine:g}: {hits[cosines == cosine].mean():.3f}" for cosine in args.cosines]
    (warm_p50, warm_p99), (cold_p50, cold_p99) = (
        np.percentile(np.array(timings) * 1000, [50, 99]) for timings in (warm, cold)
    )
    extra = _unit_rows(rng.standard_normal((_ADDS, args.dims), dtype=np.float32))
    started = time.perf_counter()
    for i, vector in enumerate(extra):
        index.add("p", f"extra{i}", vector)
    add_us = (time.perf_counter() - started) / _ADDS * 1e6
    arrays = args.dims * 4 + SKETCH_BYTES  # spare rows: up to as many again
    print(
        f"{kind}: {args.entries} entries x {args.dims} dims, one partition, {len(queries)} "
        f"queries: lookup back to back p50 {warm_p50:.3f} ms, p99 {warm_p99:.3f} ms; "
        f"after an exact search evicted the caches p50 {cold_p50:.3f} ms, p99 {cold_p99:.3f} ms; "
        f"recall@1 at cosine {', '.join(recalls)}; "
        f"arrays {arrays} B/entry, allocated {allocated:.0f} B/entry; "
        f"add into the full index {add_us:.0f} us"
    )


def _lookups(
    index: SemanticIndex, queries: list[Matrix], evict: Matrix | None
) -> tuple[list[float], list[str]]:
    """Each query's lookup time and the key it found; with `evict`, a product
    with every row of it before each lookup (the exact search's reads)."""
    timings, found = [], []
    for query in queries:
        if evict is not None:
            evict @ query
        started = time.perf_counter()
        match = index.nearest("p", query)
        timings.append(time.perf_counter() - started)
        found.append(match.key if match is not None else "")
    return timings, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=100, help="per cosine")
    parser.add_argument("--cosines", type=float, nargs="+", default=[0.95, 0.9, 0.85, 0.8])
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", default=["uniform", "topics"])
    args = parser.parse_args()
    for kind in args.kinds:
        _measure(kind, args)


if __name__ == "__main__":
    main()
