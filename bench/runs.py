"""Benchmark: what a dry run, a recorded run and its rollback cost (issue 16).

On a synthetic gallery (``bench/synthetic.py``: 5 % of the true persons split in two, so a
run has merges to make), times in one process:

* a dry run (``recognition.recluster(dry_run=True)``: the plan and its diff, no write);
* a real run, and within it the recording (``runs.begin_run``: one document per moved
  face, snapshots of the persons it deletes, the run document) against the run's total;
* the run's rollback (``runs.rollback``: the conflict check, the record, the moves back).

    .venv/bin/python -m bench.runs                      # 10k faces, embedded store
    .venv/bin/python -m bench.runs --faces 20000 --backend mongomock

Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time
from collections import Counter

import config
from bench import synthetic
from services import clustering
from services import recognition
from services import rollback
from services import runs
from services import storage
from services.context import Gallery

URIS = {"embedded": "", "mongomock": "mongomock://"}


def assignment(store: storage.Store) -> dict[str, str]:
    return {f["_id"]: f["person_id"] for f in store.iter_faces({}, {"person_id": 1})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--backend", choices=sorted(URIS), default="embedded")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-runs-") as data_dir:
        store = storage.open_store(URIS[args.backend], "bench", data_dir)
        store.ensure_indexes()
        synthetic.write(store, synthetic.generate(args.faces))
        gallery = Gallery(config.load_config({"FLASK_ENV": "testing"}, environ={}),
                          store=store)
        run = functools.partial(recognition.recluster, gallery, eps=clustering.DEFAULT_EPS,
                                min_samples=clustering.DEFAULT_MIN_SAMPLES)
        before = assignment(store)

        started = time.perf_counter()
        preview = run(dry_run=True)
        dry_s = time.perf_counter() - started

        recording = Counter()
        begin = runs.begin_run

        def timed_begin(*a: object, **k: object) -> None:
            started = time.perf_counter()
            begin(*a, **k)  # type: ignore[arg-type]
            recording["s"] += time.perf_counter() - started

        runs.begin_run = timed_begin  # type: ignore[assignment]
        started = time.perf_counter()
        done = run()
        run_s = time.perf_counter() - started
        runs.begin_run = begin  # type: ignore[assignment]

        started = time.perf_counter()
        rolled = rollback.undo_run(store, done["run_number"])
        rollback_s = time.perf_counter() - started
        exact = assignment(store) == before

    print(f"re-clustering runs, {args.faces} synthetic faces, {args.backend} store "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"load {'/'.join(f'{v:.1f}' for v in os.getloadavg())})")
    print(f"  dry run:   {dry_s:6.2f} s  moves {preview['moves_total']}, "
          f"churn {preview['churn']}")
    print(f"  real run:  {run_s:6.2f} s  moves {done['faces_moved']}; recording "
          f"{recording['s']:.2f} s = {recording['s'] / run_s:.0%} of the run; "
          f"dry run / run {dry_s / run_s:.2f}")
    print(f"  rollback:  {rollback_s:6.2f} s  faces restored {rolled['faces_restored']}, "
          f"persons recreated {rolled['persons_recreated']}; rollback / run "
          f"{rollback_s / run_s:.2f}; exact previous assignment: {exact}")


if __name__ == "__main__":
    main()
