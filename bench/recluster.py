"""Benchmark: re-clustering every face of a 10k and a 50k synthetic gallery.

Times ``services.recognition.recluster`` (the ``POST /cluster`` use-case: lock, read every
embedding, constrained average linkage, write the moves, new epoch, reload this worker's
index) on a store filled by ``bench/synthetic.py``, in which 5 % of the true persons are split
in two: re-clustering has merges to find. Before it, the same steps are timed alone on the
same data: reading the faces, ``clustering.cluster_faces``, ``match_clusters_to_persons``;
during it, every Store call is timed, so the block splits the total into database reads,
database writes and the rest (clustering and Python). Pairwise precision/recall/F1 of the
persons against the synthetic truth are printed before and after.

Each size runs in its own child process, so its peak memory (``ru_maxrss``) is its own.

    .venv/bin/python -m bench.recluster                          # 10k and 50k, embedded store
    .venv/bin/python -m bench.recluster --quick                  # 10k only
    .venv/bin/python -m bench.recluster --backend mongomock      # or both: embedded mongomock

Nothing here asserts on time: the block says PASS or MISS against the goal and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import typing as t
from collections import Counter
from collections import defaultdict

import numpy as np
import psutil

import config
from bench import synthetic
from services import clustering
from services import recognition
from services import storage
from services.context import Gallery
from services.storage import Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EPS = clustering.DEFAULT_EPS  # the product default (DBSCAN_EPS)
MIN_SAMPLES = clustering.DEFAULT_MIN_SAMPLES
GOAL_N = 50_000
GOAL_S = 30.0
URIS = {"embedded": "", "mongomock": "mongomock://"}
#: Store methods that write; every other public one reads.
WRITES = {
    "insert_persons", "move_all_faces", "set_face_person", "adjust_person_counts",
    "set_person_fields", "delete_person", "new_epoch", "acquire_lock", "release_lock",
    "next_seq", "log_face_changes", "offer_thumbnail", "insert_faces",
}

Doc = dict[str, t.Any]


class StoreTimer:
    """Times every public method of one Store instance (the instance's attributes only)."""

    def __init__(self, store: Store) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        for name in dir(store):
            method = getattr(store, name)
            if not name.startswith("_") and callable(method):
                setattr(store, name, self._wrap(name, method))

    def _wrap(self, name: str, method: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        @functools.wraps(method)
        def timed(*args: t.Any, **kwargs: t.Any) -> t.Any:
            started = time.perf_counter()
            try:
                result = method(*args, **kwargs)
                # iter_faces hands back a lazy cursor: read it here, so the read counts.
                return iter(list(result)) if name == "iter_faces" else result
            finally:
                self.calls[name] += 1
                self.seconds[name] += time.perf_counter() - started
        return timed

    def reset(self) -> None:
        self.calls.clear()
        self.seconds.clear()

    def total(self, writes: bool) -> float:
        return sum(s for name, s in self.seconds.items() if (name in WRITES) == writes)

    def top(self, count: int = 6) -> list[tuple[str, int, float]]:
        ranked = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:count]
        return [(name, self.calls[name], seconds) for name, seconds in ranked]


def persons_of(store: Store, face_ids: list[str]) -> list[str]:
    person = {f["_id"]: f["person_id"] for f in store.iter_faces({}, {"person_id": 1})}
    return [person[f] for f in face_ids]


def counts_consistent(store: Store) -> bool:
    """Each person's face_count equals its faces, and no person is left without faces."""
    actual = Counter(f["person_id"] for f in store.iter_faces({}, {"person_id": 1}))
    stored = {p["_id"]: p["face_count"] for p in store.iter_persons({"face_count": 1})}
    return stored == dict(actual)


# -- one size, in a child process -----------------------------------------------------------

def run_child(n_faces: int, backend: str) -> Doc:
    say = functools.partial(print, file=sys.stderr, flush=True)
    synth = synthetic.generate(n_faces)
    with tempfile.TemporaryDirectory(prefix="bench-recluster-") as data_dir:
        store = storage.open_store(URIS[backend], "bench", data_dir)
        store.ensure_indexes()
        started = time.perf_counter()
        truth_of = synthetic.write(store, synth)
        fill_s = time.perf_counter() - started
        say(f"  {backend}: {n_faces} faces written in {fill_s:.1f} s")
        face_ids = list(truth_of)
        truth = [truth_of[f] for f in face_ids]
        before = clustering.pairwise_scores(persons_of(store, face_ids), truth)

        # The steps alone, read-only, on the same data.
        started = time.perf_counter()
        faces = list(store.iter_faces({}, recognition._CLUSTER_FIELDS))
        embeddings = np.stack([storage.embedding_from_bytes(f["embedding"]) for f in faces])
        read_s = time.perf_counter() - started
        image_ids = [f["image_id"] for f in faces]
        fixed = [None] * len(faces)
        started = time.perf_counter()
        labels = clustering.cluster_faces(embeddings, image_ids, eps=EPS,
                                          min_samples=MIN_SAMPLES, fixed=fixed)
        cluster_s = time.perf_counter() - started
        started = time.perf_counter()
        clustering.match_clusters_to_persons(labels, [f["person_id"] for f in faces])
        match_s = time.perf_counter() - started
        tracemalloc.start()
        clustering.cluster_faces(embeddings, image_ids, eps=EPS, min_samples=MIN_SAMPLES,
                                 fixed=fixed)
        cluster_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        labels_f1 = clustering.pairwise_scores(
            labels, [truth_of[f["_id"]] for f in faces])[2]
        del faces, embeddings

        settings = config.load_config({"FLASK_ENV": "testing"}, environ={})
        gallery = Gallery(settings, store=store)
        timer = StoreTimer(store)
        rss_before = psutil.Process().memory_info().rss
        high_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        started = time.perf_counter()
        result = recognition.recluster(gallery, eps=EPS, min_samples=MIN_SAMPLES,
                                       preserve_manual=True)
        total_s = time.perf_counter() - started
        high_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        first = {"total_s": total_s, "reads_s": timer.total(writes=False),
                 "writes_s": timer.total(writes=True), "top": timer.top(),
                 "result": result}
        say(f"  {backend}: re-clustered {n_faces} faces in {total_s:.1f} s")

        after = clustering.pairwise_scores(persons_of(store, face_ids), truth)
        consistent = counts_consistent(store)

        timer.reset()
        started = time.perf_counter()
        again = recognition.recluster(gallery, eps=EPS, min_samples=MIN_SAMPLES,
                                      preserve_manual=True)
        second = {"total_s": time.perf_counter() - started,
                  "reads_s": timer.total(writes=False), "writes_s": timer.total(writes=True),
                  "moved": again["faces_moved"]}
    return {
        "n": n_faces, "backend": backend, "summary": synthetic.summary(synth),
        "fill_s": fill_s, "read_s": read_s, "cluster_s": cluster_s, "match_s": match_s,
        "cluster_peak": cluster_peak, "labels_f1": labels_f1, "before": before,
        "after": after, "consistent": consistent, "first": first, "second": second,
        "rss_before": rss_before, "high_before": high_before, "high_after": high_after,
    }


def spawn(n_faces: int, backend: str) -> Doc:
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", str(n_faces), backend],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {n_faces}-face run on {backend} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report -------------------------------------------------------------------------------

def load_average() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


LOAD_AT_START = load_average()


def report(rows: list[Doc], quick: bool) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    lines = [
        "=" * 96,
        "Face Gallery API - re-clustering every face (services.recognition.recluster)",
        f"machine : {os.cpu_count()} cpus ({cores} usable), Python {platform.python_version()}"
        f", {platform.platform()}, numpy {np.__version__}",
        f"load    : {LOAD_AT_START} at start, {load_average()} at the end (1/5/15 min; "
        f"other processes share these cores)",
        f"settings: eps {EPS}, min_samples {MIN_SAMPLES}, preserve_manual, "
        f"MAX_BLOCK {clustering.MAX_BLOCK}; each size in a fresh child process",
    ]
    mib = 2**20
    for row in rows:
        first, second, res = row["first"], row["second"], row["first"]["result"]
        other = first["total_s"] - first["reads_s"] - first["writes_s"]
        peak = row["high_after"] - row["rss_before"]
        peak_text = (f"{peak / mib:.0f} MiB above the {row['rss_before'] / mib:.0f} MiB before"
                     if row["high_after"] > row["high_before"] else
                     f"<= {peak / mib:.0f} MiB above the {row['rss_before'] / mib:.0f} MiB "
                     f"before (the fill set the high-water mark)")
        top = ", ".join(f"{name} {calls}x {seconds:.2f} s" for name, calls, seconds
                        in first["top"])
        p0, r0, f0 = row["before"]
        p1, r1, f1 = row["after"]
        lines += [
            "-" * 96,
            f"{row['n']:>7,} faces on the {row['backend']} store (written in "
            f"{row['fill_s']:.1f} s)",
            *("  " + line for line in row["summary"].splitlines()),
            f"  recluster total            {first['total_s']:7.2f} s   = DB reads "
            f"{first['reads_s']:.2f} s + DB writes {first['writes_s']:.2f} s + clustering and "
            f"Python {other:.2f} s",
            f"    slowest Store calls      {top}",
            f"    result                   {res['faces_moved']} faces moved, "
            f"{res['persons_merged']} persons merged, {res['persons_deleted']} deleted, "
            f"{res['persons_created']} created, {res['persons_total']} persons",
            f"  steps alone                read faces {row['read_s']:.2f} s, cluster_faces "
            f"{row['cluster_s']:.2f} s, match_clusters_to_persons {row['match_s']:.2f} s",
            f"  re-run, nothing to move    {second['total_s']:7.2f} s   (DB reads "
            f"{second['reads_s']:.2f} s, writes {second['writes_s']:.2f} s, "
            f"{second['moved']} moved)",
            f"  peak memory                process RSS {peak_text}; cluster_faces alone "
            f"{row['cluster_peak'] / mib:.0f} MiB (tracemalloc peak)",
            f"  persons vs truth (pairwise) before P {p0:.4f} R {r0:.4f} F1 {f0:.4f}  ->  "
            f"after P {p1:.4f} R {r1:.4f} F1 {f1:.4f}   (cluster_faces labels F1 "
            f"{row['labels_f1']:.4f})",
            f"  person face_count matches faces after: {'yes' if row['consistent'] else 'NO'}",
        ]
    lines.append("-" * 96)
    goal_rows = [r for r in rows if r["n"] == GOAL_N]
    if not goal_rows:
        lines.append(f"goal  {GOAL_N:,} faces <= {GOAL_S:.0f} s on 2 cores      not measured"
                     + (" (--quick)" if quick else ""))
    for row in goal_rows:
        got = row["first"]["total_s"]
        lines.append(f"goal  {GOAL_N:,} faces <= {GOAL_S:.0f} s on 2 cores ({row['backend']})"
                     f"   {got:7.2f} s   {'PASS' if got <= GOAL_S else 'MISS'}")
    lines.append("=" * 96)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 10k faces only")
    parser.add_argument("--backend", nargs="+", choices=sorted(URIS), default=["embedded"])
    parser.add_argument("--child", nargs=2, metavar=("FACES", "BACKEND"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(int(args.child[0]), args.child[1])), flush=True)
        return 0
    sizes = (10_000,) if args.quick else (10_000, GOAL_N)
    rows = []
    for backend in args.backend:
        for n in sizes:
            print(f"{backend} store, {n} faces ...", flush=True)
            rows.append(spawn(n, backend))
    print(report(rows, args.quick), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
