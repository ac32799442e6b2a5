"""Benchmark: merge suggestions over 10k persons, ours against measuring every pair.

Ours is what ``services.curation`` runs on each request once the worker's index snapshot is
in hand: ``suggestions.group`` (faces sorted by person, centroids), then
``suggestions.closest_to`` (``GET /persons/{id}/suggestions``) or
``suggestions.duplicate_pairs`` (``GET /persons/suggestions``): centroid distances as lower
bounds of the average linkage, exact linkage only for the pairs that can still make the top
``limit``. The naive way measures the average linkage of every pair with the same vectorised
kernel (``suggestions.linkage``) and sorts. Over the whole gallery that is
``n (n - 1) / 2`` pairs: it is timed on a subset and scaled by the number of pairs (its cost
is linear in them), which the block says.

Synthetic gallery: random 128-d centres (norm ~0.7, ~0.95 apart, as dlib's different people
are), 1-5 faces each at ~0.3 from one another, and ``DUPLICATES`` persons split in two
(a second centre ~0.2 away): the pairs the suggestions should find.

    .venv/bin/python -m bench.suggestions            # 10k persons
    .venv/bin/python -m bench.suggestions --quick    # 2k persons

Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from services import suggestions

DUPLICATES = 100
LIMIT = 10  # GET /persons/{id}/suggestions' default
PAIRS_LIMIT = 50  # GET /persons/suggestions' default
MAX_DISTANCE = 0.7  # services.curation.DEFAULT_MAX_DISTANCE
NAIVE_SUBSET = 1000


def gallery(n_persons: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings float32, person ids) of ``n_persons`` synthetic persons."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_persons, 128)) * 0.06
    twins = rng.choice(n_persons // 2, DUPLICATES, replace=False) * 2
    centres[twins + 1] = centres[twins] + rng.normal(size=(DUPLICATES, 128)) * 0.012
    sizes = rng.integers(1, 6, n_persons)
    owner = np.repeat(np.arange(n_persons), sizes)
    embeddings = centres[owner] + rng.normal(size=(len(owner), 128)) * 0.02
    return embeddings.astype(np.float32), np.array([f"p{k:06d}" for k in owner])


def timed(run, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2k persons instead of 10k")
    args = parser.parse_args()
    n = 2000 if args.quick else 10_000
    embeddings, labels = gallery(n)
    group_s, persons = timed(lambda: suggestions.group(embeddings, labels), 3)
    k_sample = np.random.default_rng(1).choice(n, 20, replace=False)

    one_times, naive_one_times = [], []
    for k in k_sample:
        t, _ = timed(lambda k=k: suggestions.closest_to(persons, int(k), limit=LIMIT), 1)
        one_times.append(t)
        others = np.delete(np.arange(n), k)
        t, _ = timed(lambda k=k, others=others: np.argsort(suggestions.linkage(
            persons, np.full(len(others), k), others))[:LIMIT], 1)
        naive_one_times.append(t)
    one_s, naive_one_s = statistics.median(one_times), statistics.median(naive_one_times)

    pairs_s, (left, right, distances) = timed(lambda: suggestions.duplicate_pairs(
        persons, limit=PAIRS_LIMIT, max_distance=MAX_DISTANCE), 3)
    found = {frozenset((int(a), int(b))) for a, b in zip(left, right, strict=True)}
    twins = {frozenset((int(a), int(a) + 1)) for a in range(0, n, 2)
             if frozenset((int(a), int(a) + 1)) in found}

    subset = min(n, NAIVE_SUBSET)
    sub = suggestions.group(*gallery(subset, seed=2))
    sub_s, _ = timed(lambda: suggestions.naive_pairs(sub, limit=PAIRS_LIMIT,
                                                     max_distance=MAX_DISTANCE), 1)
    naive_pairs_s = sub_s * (n * (n - 1)) / (subset * (subset - 1))

    print("\n".join([
        f"merge suggestions, {n} synthetic persons, {len(labels)} faces, "
        f"{DUPLICATES} split persons",
        f"  group by person (each request)     : {group_s * 1e3:8.1f} ms",
        f"  one person, limit {LIMIT}              : {one_s * 1e3:8.1f} ms   naive "
        f"{naive_one_s * 1e3:8.1f} ms   ratio {naive_one_s / one_s:6.1f}x  (median of 20)",
        f"  whole gallery, limit {PAIRS_LIMIT}, <= {MAX_DISTANCE} : {pairs_s * 1e3:8.1f} ms   "
        f"naive {naive_pairs_s:8.1f} s    ratio {naive_pairs_s / pairs_s:6.0f}x  "
        f"(naive timed on {subset} persons: {sub_s:.2f} s, scaled by pairs)",
        f"  pairs found {len(distances)}, of them split persons {len(twins)}; "
        f"closest {distances[:1].round(3).tolist()}, farthest kept "
        f"{distances[-1:].round(3).tolist()}",
        f"machine : {os.cpu_count()} cpus (shared), Python {platform.python_version()}, "
        f"numpy {np.__version__}",
    ]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
