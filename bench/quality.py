"""Benchmark: GET /stats/quality over a 100k-face synthetic gallery, ours against the naive way.

Ours is ``services.quality.quality_figures`` on a :class:`~services.context.Gallery` over a
store filled by ``bench/synthetic.py`` (5 % of the true persons split in two: likely
duplicates to find). It is timed three ways: cold (the first call once the worker's index is
loaded: grouping, spread, duplicates, conflicts), cached (nothing changed: a few counts), and
after one face moved (the index's snapshot changes, so everything is computed again). The
index load itself is timed apart: every worker pays it once, for search and uploads alike.

The naive way answers the same figures with no bounds and no vectorised grouping: the
average linkage of every pair of persons (``suggestions.naive_pairs``, the same kernel), each
person's spread by a Python loop over its face pairs, and conflicts by a Python dict. The
first two are timed on a subset of persons and scaled by their number of pairs (their cost is
linear in them), which the block says.

    .venv/bin/python -m bench.quality                      # 100k faces, mongomock
    .venv/bin/python -m bench.quality --backend embedded   # the default store

It also times GET /faces/{id}/explain on the same gallery.

Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections import defaultdict

import numpy as np

import config
from bench import synthetic
from services import clustering
from services import explanation
from services import quality
from services import storage
from services import suggestions
from services.context import Gallery

URIS = {"embedded": "", "mongomock": "mongomock://"}
NAIVE_PERSONS = 400


def timed(run, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def naive_spread(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Each person's mean pairwise distance, one pair at a time."""
    members: dict[str, list[int]] = defaultdict(list)
    for row, label in enumerate(labels.tolist()):
        members[label].append(row)
    spread = {}
    for label, rows in members.items():
        pairs = [float(np.linalg.norm(embeddings[a] - embeddings[b]))
                 for i, a in enumerate(rows) for b in rows[i + 1:]]
        if pairs:
            spread[label] = sum(pairs) / len(pairs)
    return spread


def naive_conflicts(person_ids: np.ndarray, image_ids: np.ndarray) -> int:
    counts = Counter(zip(person_ids.tolist(), image_ids.tolist(), strict=True))
    return sum(1 for n in counts.values() if n > 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--backend", choices=sorted(URIS), default="mongomock")
    args = parser.parse_args()
    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731 (progress only)
    synth = synthetic.generate(args.faces)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as data_dir:
        store = storage.open_store(URIS[args.backend], "bench", data_dir)
        store.ensure_indexes()
        fill_s, _ = timed(lambda: synthetic.write(store, synth))
        say(f"{args.faces} faces written in {fill_s:.1f} s")
        settings = config.load_config({"FLASK_ENV": "testing"}, environ={})
        gallery = Gallery(settings, store=store)
        load_s, index = timed(gallery.sync_index)
        cold_s, cold = timed(lambda: quality.quality_figures(gallery))
        warm_s, warm = timed(lambda: quality.quality_figures(gallery), 5)
        face = store.faces_in_seq_range(0, 1, {"person_id": 1})[0]
        # The last face's person: another photo, so the move makes no conflict.
        target = store.faces_in_seq_range(args.faces - 1, args.faces,
                                          {"person_id": 1})[0]["person_id"]
        store.set_face_person(face["_id"], target, manual=True)
        store.log_face_changes([(face["_id"], target)])
        changed_s, changed = timed(lambda: quality.quality_figures(gallery))
        assert not cold["cached"] and warm["cached"] and not changed["cached"]  # type: ignore
        stale_s, _ = timed(lambda: quality.quality_figures(gallery, max_age=60), 5)
        # GET /faces/{id}/explain on the same gallery: one face, median of three.
        explain_s, _ = timed(lambda: explanation.explain_face(gallery, face["_id"]), 3)

        embeddings, _, person_ids, image_ids = index.snapshot()  # type: ignore[attr-defined]
        persons = suggestions.group(embeddings, person_ids)
        n = len(persons.ids)
        subset = np.sort(np.random.default_rng(3).choice(n, min(n, NAIVE_PERSONS),
                                                          replace=False))
        keep = np.isin(person_ids, persons.ids[subset])
        sub = suggestions.group(embeddings[keep], person_ids[keep])
        eps = float(settings["DBSCAN_EPS"])
        sub_pairs_s, _ = timed(lambda: suggestions.naive_pairs(sub, limit=10**9,
                                                               max_distance=eps))
        pairs_scale = (n * (n - 1)) / (len(subset) * (len(subset) - 1))
        sub_spread_s, _ = timed(lambda: naive_spread(embeddings[keep], person_ids[keep]))
        sizes = persons.sizes.astype(np.int64)
        spread_scale = float((sizes * (sizes - 1)).sum()) / max(1, float(
            (sub.sizes.astype(np.int64) * (sub.sizes - 1)).sum()))
        conflicts_s, naive_count = timed(lambda: naive_conflicts(person_ids, image_ids))
        naive_s = sub_pairs_s * pairs_scale + sub_spread_s * spread_scale + conflicts_s
        assert naive_count == changed["same_photo_conflicts"]  # type: ignore[index]

    dup = cold["likely_duplicate_persons"]  # type: ignore[index]
    spread = cold["spread"]  # type: ignore[index]
    print("\n".join([
        f"quality figures, {args.faces} synthetic faces, {n} persons, {args.backend} store "
        f"({synthetic.SPLIT_SHARE:.0%} of true persons split in two)",
        f"  index load (once per worker)        : {load_s:8.2f} s",
        f"  GET /stats/quality cold             : {cold_s * 1e3:8.1f} ms",
        f"  cached (nothing changed, median 5)  : {warm_s * 1e3:8.1f} ms   "
        f"cold/cached {cold_s / warm_s:6.0f}x",
        f"  after one face moved (recomputed)   : {changed_s * 1e3:8.1f} ms   "
        f"with max_age=60 {stale_s * 1e3:6.1f} ms",
        f"  GET /faces/{{id}}/explain (median 3)  : {explain_s * 1e3:8.1f} ms",
        f"  naive (all pairs, Python loops)     : {naive_s:8.1f} s    "
        f"naive/cold {naive_s / cold_s:6.0f}x   naive/cached {naive_s / warm_s:8.0f}x",
        f"    person pairs {sub_pairs_s:.2f} s on {len(subset)} persons x {pairs_scale:.0f}; "
        f"spread {sub_spread_s:.2f} s x {spread_scale:.0f}; conflicts {conflicts_s:.2f} s",
        f"  figures: duplicates {dup['count']} (<= {dup['threshold']}), conflicts "
        f"{cold['same_photo_conflicts']}, persons of one face "  # type: ignore[index]
        f"{cold['persons_of_one_face']}, spread mean {spread['mean']} median "  # type: ignore
        f"{spread['median']}, over {spread['threshold']}: {spread['persons_over_threshold']}",
        f"machine : {os.cpu_count()} cpus (shared), Python {platform.python_version()}, "
        f"numpy {np.__version__}, distance kernel {clustering.__name__}.face_distances",
    ]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
