"""The semantic cache's lookup, embedding excluded: `python -m bench.semantic`.

Fills one partition of a `SemanticIndex` with random unit vectors (the
worst case: every entry in the query's partition) and times `nearest` for
queries near stored entries, reporting p50/p99, recall@1 against an exact
float64 search, and memory per entry. Sizes: --entries, --dims, --queries.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sluice.semantic_index import SemanticIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    index = SemanticIndex(args.entries)
    vectors = rng.standard_normal((args.entries, args.dims), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, vector in enumerate(vectors):
        index.add("p", f"k{i}", vector)
    exact = vectors.astype(np.float64)
    timings, found = [], 0
    for _ in range(args.queries):
        noisy = vectors[rng.integers(args.entries)] + 0.05 * rng.standard_normal(args.dims)
        query = (noisy / np.linalg.norm(noisy)).astype(np.float32)
        started = time.perf_counter()
        match = index.nearest("p", query)
        timings.append(time.perf_counter() - started)
        truth = int(np.argmax(exact @ query.astype(np.float64)))
        found += match is not None and match.key == f"k{truth}"
    p50, p99 = np.percentile(np.array(timings) * 1000, [50, 99])
    per_entry = args.dims * 4  # float32 row; the matrix holds at most twice the rows
    print(
        f"{args.entries} entries x {args.dims} dims, one partition: "
        f"lookup p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
        f"recall@1 {found / args.queries:.3f}; vector {per_entry} B/entry"
    )


if __name__ == "__main__":
    main()
