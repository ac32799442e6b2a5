"""Measure the rules that group faces into persons, on the labelled dev set.

Incremental assignment (photos uploaded one by one; the faces of a photo assigned jointly)
and re-clustering (all faces at once) are scored by pairwise precision, recall and F1, for
the canonical upload order (MANIFEST.tsv), shuffled orders, random 60-photo subsets, random
13-person galleries (the held-back set's size) and galleries of 8 to 30 people. The chosen
rules are the ones in ``services/clustering.py``; the others are re-implemented here only to
compare. Encodings are the product's: photos decoded and resized as uploads are, faces found
and encoded by ``services.face_engine.FaceEngine`` (68-point landmarks);
``--landmarks small`` encodes
the same boxes from 5-point landmarks instead, to compare. They are computed once per landmark
model and cached in /tmp. Then timings on synthetic faces.

    python -m bench.assignment_rules [--dev DIR] [--landmarks large|small] [--no-scale]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist

from services import clustering

HERE = Path(__file__).resolve().parent

# The shared location, then ../shared/faces/dev beside the repository (often the same place).
DEV_DIRS = list(dict.fromkeys([Path("/work/shared/faces/dev"),
                               HERE.parent.parent / "shared" / "faces" / "dev"]))
CACHE_DIR = Path("/tmp")
LANDMARKS = ("large", "small")  # 68-point (FaceEngine, the product) or 5-point landmarks
FORMATS = {"png", "jpg", "jpeg", "gif", "webp"}  # config ALLOWED_EXTENSIONS
MAX_DIMENSION = 1920  # config IMAGE_MAX_DIMENSION
TOLERANCES = np.round(np.arange(0.40, 0.641, 0.02), 2)
EPS_GRID = np.round(np.arange(0.44, 0.701, 0.02), 2)
SHUFFLES = 5
SUBSETS = 30
SUBSET_PHOTOS = 60
PEOPLE = 13  # the held-back set's size
EXTRA_GALLERIES = 100  # more 13-person galleries (own seed) for the fine grid and consistency
NEAREST_FINE = np.round(np.arange(0.55, 0.5801, 0.005), 3)
BOX = ("top", "right", "bottom", "left")  # FACES.tsv columns, face_locations order


def find_dev(explicit: str | None) -> Path | None:
    """The dev-set folder, or None when it is not on this machine."""
    for d in [Path(explicit)] if explicit else DEV_DIRS:
        if (d / "FACES.tsv").is_file() and (d / "MANIFEST.tsv").is_file():
            return d
    return None


def load_encodings(dev: Path, landmarks: str = "large"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Encodings, file and identity per face (FACES.tsv order), and photos in MANIFEST order.

    Photos go through the product's path: ``decode_upload`` (EXIF orientation, RGB),
    ``resize_to_fit(IMAGE_MAX_DIMENSION)``, then ``FaceEngine`` detection (hog, upsample 1).
    ``large`` encodes from 68-point landmarks (``FaceEngine.analyse``, the product);
    ``small`` encodes the same boxes from 5-point landmarks (face_recognition's default).
    """
    if landmarks not in LANDMARKS:
        raise ValueError(f"landmarks must be one of {LANDMARKS}")
    with open(dev / "FACES.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    with open(dev / "MANIFEST.tsv", newline="") as fh:
        photos = [r["file"] for r in csv.DictReader(fh, delimiter="\t")]
    files = np.array([r["file"] for r in rows])
    ident = np.array([r["identity"] for r in rows])
    key = (f"FaceEngine() hog upsample 1 jitters 1; decode_upload + resize_to_fit "
           f"{MAX_DIMENSION}; landmarks {landmarks}")
    cache = cache_path(landmarks)
    if cache.is_file():
        cached = np.load(cache)
        if str(cached["key"]) == key and list(cached["files"]) == list(files):
            return cached["enc"].astype(np.float32), files, ident, photos
    from services import face_engine
    from services import imaging

    engine = face_engine.FaceEngine()  # the product's defaults: hog, upsample 1, 1 jitter
    enc = np.full((len(rows), 128), np.nan, dtype=np.float32)
    worst = 0.0
    for photo in photos:
        mine = [i for i, r in enumerate(rows) if r["file"] == photo]
        decoded = imaging.decode_upload((dev / photo).read_bytes(), allowed_formats=FORMATS)
        rgb, scale = imaging.resize_to_fit(decoded.rgb, MAX_DIMENSION)
        if landmarks == "large":
            found = [(f.box, f.encoding) for f in engine.analyse(rgb)]
        else:
            import face_recognition  # only for its 5-point encodings

            boxes = [box for box, _ in engine.detect(rgb)]
            found = list(zip(boxes, face_recognition.face_encodings(rgb, boxes, 1, "small"),
                             strict=True))
        if len(found) != len(mine):
            raise RuntimeError(f"{photo}: {len(found)} faces found, FACES.tsv lists {len(mine)}")
        taken: set[int] = set()
        for box, e in found:
            # FACES.tsv boxes are on the full-size image: scale them to the analysed one,
            # then match each detection to the nearest row (sum of edge offsets, pixels).
            err = [sum(abs(a - int(rows[i][k]) * scale) for a, k in zip(box, BOX, strict=True))
                   for i in mine]
            best = int(np.argmin(err))
            if best in taken:
                raise RuntimeError(f"{photo}: two detections match FACES.tsv face {best}")
            taken.add(best)
            worst = max(worst, float(err[best]))
            enc[mine[best]] = e
    print(f"encoded {len(rows)} faces ({landmarks}); largest box offset from FACES.tsv "
          f"{worst:.1f} px (4 edges summed)")
    np.savez(cache, enc=enc, files=files, ident=ident, key=np.array(key))
    return enc, files, ident, photos


def cache_path(landmarks: str) -> Path:
    """Where the encodings of one landmark model are cached (not the old, unkeyed cache)."""
    return CACHE_DIR / f"dev_encodings_engine_{landmarks}.npz"


# ---- incremental rules: score of each (query face, person), lower is closer ----------------

def _per_person(dist: np.ndarray, code: np.ndarray, k: int, how: str) -> np.ndarray:
    out = np.empty((len(dist), k))
    for p in range(k):
        d = np.sort(dist[:, code == p], axis=1)
        out[:, p] = d[:, 0] if how == "min" else d.mean(axis=1) if how == "mean" else \
            d[:, : int(how)].mean(axis=1)
    return out


def rule_scores(rule: str, q: np.ndarray, e: np.ndarray, code: np.ndarray, k: int) -> np.ndarray:
    """Score matrix (faces x persons) of a candidate rule."""
    dist = cdist(q, e)
    if rule == "nearest":
        return _per_person(dist, code, k, "min")
    if rule == "average":
        return _per_person(dist, code, k, "mean")
    if rule.startswith("knn"):
        return _per_person(dist, code, k, rule[3:])
    centre = np.stack([e[code == p].mean(axis=0) for p in range(k)])
    if rule == "centroid_norm":  # a mean of encodings is shorter than they are: rescale it
        norm = np.array([np.linalg.norm(e[code == p], axis=1).mean() for p in range(k)])
        centre *= (norm / np.linalg.norm(centre, axis=1))[:, None]
    score = cdist(q, centre)
    if rule.startswith("combo"):  # centroid, and the nearest face within t1
        score[_per_person(dist, code, k, "min") > float(rule.split("@")[1])] = np.inf
    return score


def greedy(score: np.ndarray, tol: float) -> list[int | None]:
    """Joint assignment of one photo's faces: smallest score first, one face per person."""
    out: list[int | None] = [None] * len(score)
    used: set[int] = set()
    for flat in np.argsort(score, axis=None, kind="stable"):
        j, p = divmod(int(flat), score.shape[1])
        if score[j, p] > tol:
            break
        if out[j] is None and p not in used:
            out[j] = p
            used.add(p)
    return out


def incremental(enc: np.ndarray, files: np.ndarray, order: list[str], rule: str,
                tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Upload photos in ``order``; return (face indices, person label per face)."""
    done: list[int] = []
    label: list[int] = []
    k = 0
    for photo in order:
        faces = np.flatnonzero(files == photo)
        if not len(faces):
            continue
        if rule == "service":
            ids = np.array([f"p{c}" for c in label])
            got = clustering.assign_faces(enc[faces], enc[done], ids, tolerance=tol)
            chosen = [None if p is None else int(p[1:]) for p, _ in got]
        elif done:
            chosen = greedy(rule_scores(rule, enc[faces], enc[done], np.array(label), k), tol)
        else:
            chosen = [None] * len(faces)
        for face, c in zip(faces, chosen, strict=True):
            if c is None:
                c, k = k, k + 1
            done.append(int(face))
            label.append(c)
    return np.array(done), np.array(label)


# ---- re-clustering candidates --------------------------------------------------------------

def split_same_photo(lab: np.ndarray, e: np.ndarray, img: np.ndarray, eps: float) -> np.ndarray:
    """Repair afterwards: in a cluster holding two faces of one image keep the one closest to
    the rest; the other goes to its nearest other cluster within eps (mean), else alone."""
    lab = lab.copy()
    dist = cdist(e, e)
    while True:
        clash = next(((c, im) for c in np.unique(lab) for im in np.unique(img[lab == c])
                      if ((lab == c) & (img == im)).sum() > 1), None)
        if clash is None:
            return lab
        c, im = clash
        mem = np.flatnonzero(lab == c)
        faces = mem[img[mem] == im]
        rest = mem[img[mem] != im]
        spread = [dist[f, rest].mean() if len(rest) else 0.0 for f in faces]
        for f in np.delete(faces, int(np.argmin(spread))):
            best, best_d = lab.max() + 1, eps
            for c2 in np.unique(lab):
                m2 = np.flatnonzero(lab == c2)
                if c2 != c and not (img[m2] == im).any() and dist[f, m2].mean() <= best_d:
                    best, best_d = c2, dist[f, m2].mean()
            lab[f] = best


def noise_to_singletons(lab: np.ndarray) -> np.ndarray:
    """Noise (-1) faces become persons of their own."""
    lab = lab.copy()
    noise = np.flatnonzero(lab < 0)
    lab[noise] = lab.max() + 1 + np.arange(len(noise))
    return lab


def recluster(algo: str, param: float, e: np.ndarray, img: np.ndarray, ms: int = 1) -> np.ndarray:
    """Labels of one candidate algorithm, same-photo rule enforced."""
    if algo == "ours":
        return clustering.cluster_faces(e, img, eps=param, min_samples=ms)
    if algo == "dbscan":
        from sklearn.cluster import DBSCAN

        lab = DBSCAN(eps=param, min_samples=ms).fit_predict(e)
    elif algo == "avg_posthoc":
        from sklearn.cluster import AgglomerativeClustering

        lab = AgglomerativeClustering(None, distance_threshold=param,
                                      linkage="average").fit_predict(e)
    elif algo == "whispers":
        import dlib

        lab = np.array(dlib.chinese_whispers_clustering(
            [dlib.vector(v.tolist()) for v in e.astype(np.float64)], float(param)))
    elif algo == "hdbscan":
        from sklearn.cluster import HDBSCAN

        lab = HDBSCAN(min_cluster_size=int(param), copy=True).fit_predict(e)
    else:
        raise ValueError(algo)
    return split_same_photo(noise_to_singletons(lab), e, img, param if param < 1 else 0.6)


# ---- report --------------------------------------------------------------------------------

Run = tuple[np.ndarray, list[str]]  # faces taking part, photos in upload order


def make_runs(files: np.ndarray, ident: np.ndarray, photos: list[str],
              rng: np.random.Generator) -> dict[str, list[Run]]:
    """Canonical order, shuffles, random photo subsets, random 13-person galleries."""
    every = np.arange(len(files))
    runs: dict[str, list[Run]] = {"canonical": [(every, photos)]}
    runs["shuffles"] = [(every, list(rng.permutation(photos))) for _ in range(SHUFFLES)]
    runs["photos60"] = []
    for _ in range(SUBSETS):
        chosen = list(rng.permutation(photos)[:SUBSET_PHOTOS])
        runs["photos60"].append((np.flatnonzero(np.isin(files, chosen)), chosen))
    runs["people13"] = [people_run(files, ident, rng, PEOPLE) for _ in range(SUBSETS)]
    return runs


def people_run(files: np.ndarray, ident: np.ndarray, rng: np.random.Generator, k: int) -> Run:
    """All faces of k random identities (a smaller gallery, like the held-back set), shuffled."""
    chosen = rng.choice(sorted(set(ident)), k, replace=False)
    faces = np.flatnonzero(np.isin(ident, chosen))
    return faces, list(rng.permutation(sorted(set(files[faces]))))


def score_inc(enc, files, ident, run: Run, rule: str, tol: float) -> tuple[float, float, float]:
    faces, order = run
    idx, lab = incremental(enc[faces], files[faces], order, rule, tol)
    return clustering.pairwise_scores(lab, ident[faces][idx])


def score_rec(enc, files, ident, run: Run, algo: str, param: float, ms: int = 1):
    faces, _ = run
    lab = recluster(algo, param, enc[faces], files[faces], ms)
    return clustering.pairwise_scores(lab, ident[faces])


def fmt(s: tuple[float, float, float]) -> str:
    return f"{s[0]:.3f} {s[1]:.3f} {s[2]:.3f}"


def summary(scores: list[tuple[float, float, float]]) -> str:
    s = np.array(scores)
    return f"{s[:, 2].mean():.3f} {s[:, 2].min():.3f} {s[:, 0].mean():.3f}"


HEAD = (f"| {SHUFFLES} shuffles | {SUBSETS} x {SUBSET_PHOTOS} photos | {SUBSETS} x {PEOPLE} people"
        " (each: F1 mean, F1 min, P mean)")


def distance_table(enc, ident, landmarks: str) -> None:
    """How far apart faces of one person and of two people lie, and how well that separates."""
    print(f"\n## Distances ({landmarks} landmarks): pairs of faces, same vs different person")
    i, j = np.triu_indices(len(enc), 1)
    d = np.linalg.norm(enc[i].astype(np.float64) - enc[j], axis=1)
    same = ident[i] == ident[j]
    ds, dd = d[same], d[~same]
    print(f"same person  {len(ds):5d} pairs: mean {ds.mean():.3f} median {np.median(ds):.3f} "
          f"p95 {np.quantile(ds, 0.95):.3f} max {ds.max():.3f}")
    print(f"two people   {len(dd):5d} pairs: mean {dd.mean():.3f} median {np.median(dd):.3f} "
          f"p0.1 {np.quantile(dd, 0.001):.3f} min {dd.min():.3f}")
    # Separation: d' (gap in pooled standard deviations), ROC AUC (the chance a same-person
    # pair is closer than a two-people pair), equal-error rate and its threshold.
    dprime = (dd.mean() - ds.mean()) / np.sqrt((ds.var() + dd.var()) / 2)
    ranks = np.argsort(np.argsort(np.r_[ds, dd])) + 1
    auc = 1 - (ranks[: len(ds)].sum() - len(ds) * (len(ds) + 1) / 2) / (len(ds) * len(dd))
    grid = np.linspace(0.3, 0.9, 601)
    miss = np.array([(ds > t).mean() for t in grid])
    false = np.array([(dd <= t).mean() for t in grid])
    k = int(np.argmin(np.abs(miss - false)))
    print(f"d' {dprime:.2f}; ROC AUC {auc:.5f}; equal-error rate {(miss[k] + false[k]) / 2:.4f} "
          f"at {grid[k]:.3f}")
    for t in (0.50, 0.55, 0.58, 0.60):
        print(f"  at {t:.2f}: same-person pairs above {(ds > t).sum():4d} ({(ds > t).mean():.3f}),"
              f" two-people pairs within {(dd <= t).sum():3d} ({(dd <= t).mean():.4f})")
    full = np.linalg.norm(enc[:, None].astype(np.float64) - enc[None], axis=2)
    np.fill_diagonal(full, np.inf)
    has_twin = np.array([(ident == who).sum() > 1 for who in ident])
    right = ident[np.argmin(full, axis=1)] == ident
    print(f"nearest other face is the same person: {right[has_twin].sum()} of {has_twin.sum()} "
          f"faces whose person has another face")
    other = "small" if landmarks == "large" else "large"
    if cache_path(other).is_file():
        cached = np.load(cache_path(other))
        gap = np.linalg.norm(cached["enc"].astype(np.float64) - enc, axis=1)
        print(f"one face, {landmarks} vs {other} landmarks: mean {gap.mean():.3f} "
              f"min {gap.min():.3f} max {gap.max():.3f}")


def incremental_table(enc, files, ident, runs) -> None:
    print(f"\n## Incremental assignment: tol | canonical order P R F1 persons {HEAD}")
    rules = ["nearest", "centroid", "centroid_norm", "average", "knn3", "knn5",
             "combo@0.50", "combo@0.55"]
    for rule in rules:
        print(rule)
        for tol in TOLERANCES:
            idx, lab = incremental(enc, files, runs["canonical"][0][1], rule, tol)
            cells = [summary([score_inc(enc, files, ident, r, rule, tol) for r in runs[kind]])
                     for kind in ("shuffles", "photos60", "people13")]
            canon = clustering.pairwise_scores(lab, ident[idx])
            print(f"  {tol:.2f}  {fmt(canon)} {len(set(lab)):3d} | " + " | ".join(cells))
    # The service must reproduce the rule measured above, run by run.
    for run in [r for kind in runs.values() for r in kind]:
        a = score_inc(enc, files, ident, run, "average", clustering.DEFAULT_TOLERANCE)
        b = score_inc(enc, files, ident, run, "service", clustering.DEFAULT_TOLERANCE)
        assert a == b, "service differs from the 'average' rule"
    print("services.clustering.assign_faces reproduces 'average' in every run: yes")


def recluster_table(enc, files, ident, runs) -> None:
    print(f"\n## Re-clustering: param | full set P R F1 persons | {SUBSETS} x {SUBSET_PHOTOS} "
          f"photos | {SUBSETS} x {PEOPLE} people (F1 mean, F1 min, P mean)")
    eps = clustering.DEFAULT_EPS
    grid = [("ours", EPS_GRID, 1), ("ours", [0.54, 0.56, eps], 2),
            ("ours", [0.56, eps], 3), ("avg_posthoc", [0.56, eps, 0.64], 1),
            ("dbscan", EPS_GRID[:-4], 1), ("dbscan", [0.54, 0.56, 0.60], 2),
            ("whispers", EPS_GRID[:-4], 1), ("hdbscan", [2, 3], 1)]
    for algo, params, ms in grid:
        print(f"{algo} min_samples={ms}" if algo in ("ours", "dbscan") else algo)
        for param in params:
            lab = recluster(algo, param, enc, files, ms)
            full = clustering.pairwise_scores(lab, ident)
            cells = [summary([score_rec(enc, files, ident, r, algo, param, ms) for r in runs[k]])
                     for k in ("photos60", "people13")]
            print(f"  {param:<5} {fmt(full)} {len(set(lab)):3d} | " + " | ".join(cells))


def fine_table(enc, files, ident, runs) -> None:
    """Steps of 0.005 around the defaults (and around the nearest-face rule's best)."""
    kinds = ("canonical", "shuffles", "photos60", "people13", "people13x100")
    print(f"\n## Fine grid: {' | '.join(kinds)} (each: F1 mean, F1 min, P mean)")
    steps = np.round(np.arange(-0.02, 0.0201, 0.005), 3)
    grids = (("average", clustering.DEFAULT_TOLERANCE + steps), ("nearest", NEAREST_FINE))
    for rule, grid in grids:
        print(f"incremental {rule}")
        for tol in np.round(grid, 3):
            cells = [summary([score_inc(enc, files, ident, r, rule, tol) for r in runs[k]])
                     for k in kinds]
            print(f"  {tol:.3f} | " + " | ".join(cells))
    print("re-clustering ours (canonical and shuffles: the full set)")
    for eps in np.round(clustering.DEFAULT_EPS + steps, 3):
        cells = [summary([score_rec(enc, files, ident, r, "ours", eps) for r in runs[k]])
                 for k in kinds[1:]]
        print(f"  {eps:.3f} | " + " | ".join(cells))
    print("re-clustering minus incremental: tol eps | per kind: F1 gain mean, min, runs lower")
    for tol in np.round(clustering.DEFAULT_TOLERANCE + steps[3:6], 3):
        inc = {k: np.array([score_inc(enc, files, ident, r, "service", tol)[2] for r in runs[k]])
               for k in kinds}
        for eps in np.round(clustering.DEFAULT_EPS + steps[2:7], 3):
            cells = []
            for k in kinds:
                gain = np.array([score_rec(enc, files, ident, r, "ours", eps)[2]
                                 for r in runs[k]]) - inc[k]
                lower = int((gain < -1e-12).sum())
                cells.append(f"{gain.mean():+.3f} {gain.min():+.3f} {lower:2d}")
            print(f"  {tol:.3f} {eps:.3f} | " + " | ".join(cells))


def gallery_size_table(enc, files, ident, rng) -> None:
    print("\n## By gallery size: F1 mean / P mean over 20 random galleries of k people")
    sizes = [8, 13, 20, len(set(ident))]
    draws = {k: [people_run(files, ident, rng, k) for _ in range(20)] for k in sizes}
    print("rule".ljust(24) + "".join(f"k={k}".ljust(14) for k in sizes))
    finalists = [("inc", "nearest", 0.60), ("inc", "nearest", 0.56), ("inc", "nearest", 0.57),
                 ("inc", "centroid", 0.56), ("inc", "average", clustering.DEFAULT_TOLERANCE),
                 ("rec", "dbscan", 0.60), ("rec", "dbscan", 0.56), ("rec", "whispers", 0.56),
                 ("rec", "ours", clustering.DEFAULT_EPS)]
    for kind, name, param in finalists:
        cells = []
        for k in sizes:
            s = np.array([score_inc(enc, files, ident, r, name, param) if kind == "inc"
                          else score_rec(enc, files, ident, r, name, param) for r in draws[k]])
            cells.append(f"{s[:, 2].mean():.3f}/{s[:, 0].mean():.3f}".ljust(14))
        print(f"{kind} {name} {param}".ljust(24) + "".join(cells))


def consistency(enc, files, ident, runs) -> None:
    print("\n## Re-clustering vs incremental, both at their defaults, on the same faces")
    tol, eps = clustering.DEFAULT_TOLERANCE, clustering.DEFAULT_EPS
    for kind, group in runs.items():
        gaps = [score_rec(enc, files, ident, r, "ours", eps)[2]
                - score_inc(enc, files, ident, r, "service", tol)[2] for r in group]
        worse = sum(g < -1e-12 for g in gaps)
        print(f"{kind:12s} runs {len(gaps):3d}: F1 gain mean {np.mean(gaps):+.3f} "
              f"min {np.min(gaps):+.3f}; re-clustering lower in {worse}")
    # Fixed faces: the first face of every identity pinned to its true person.
    fixed: list[str | None] = [None] * len(ident)
    for who in set(ident):
        fixed[int(np.flatnonzero(ident == who)[0])] = f"fixed-{who}"
    lab = clustering.cluster_faces(enc, files, eps=eps, fixed=fixed)
    print(f"one fixed face per identity: P R F1 {fmt(clustering.pairwise_scores(lab, ident))}")
    saved = clustering.MAX_BLOCK
    try:
        clustering.MAX_BLOCK = 8  # force the block-and-merge path of large components
        blocked = clustering.cluster_faces(enc, files, eps=eps)
    finally:
        clustering.MAX_BLOCK = saved
    same = clustering.pairwise_scores(blocked, clustering.cluster_faces(enc, files, eps=eps))
    print(f"blocks of 8 faces vs one matrix: identical partition: {same[2] == 1.0}")


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Median wall time of ``repeat`` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def scale() -> None:
    from sklearn.cluster import DBSCAN

    print("\n## Scale (synthetic clusters of 5-50 faces; within ~0.4, between ~1.0)")
    rng = np.random.default_rng(0)

    def synth(n: int) -> tuple[np.ndarray, np.ndarray]:
        sizes = rng.integers(5, 51, n // 5)
        truth = np.repeat(np.arange(len(sizes)), sizes)[:n]
        centre = rng.normal(size=(len(sizes), 128)) / 16
        return (centre[truth] + rng.normal(size=(n, 128)) * 0.4 / 16).astype(np.float32), truth

    x, truth = synth(50_000)
    images = np.arange(len(x)).astype(str)
    t_ours = timed(lambda: clustering.cluster_faces(x, images))
    lab = clustering.cluster_faces(x, images)
    t_db = timed(lambda: DBSCAN(eps=0.6, min_samples=1, algorithm="brute").fit(x))
    f1 = clustering.pairwise_scores(lab, truth)[2]
    print(f"cluster_faces 50,000 faces: {t_ours:.1f} s (F1 {f1:.3f}); "
          f"seed DBSCAN(0.6, 1, brute) {t_db:.1f} s; ratio {t_ours / t_db:.2f}")
    x, truth = synth(100_000)
    ids = np.array([f"{c:024x}" for c in truth])
    q = x[:5] + 0.01
    t_assign = timed(lambda: clustering.assign_faces(q, x, ids), repeat=20)
    t_list = timed(lambda: clustering.assign_faces(q, x, ids.tolist()), repeat=20)
    t_naive = timed(lambda: np.linalg.norm(x[None] - q[:, None], axis=2).argmin(axis=1), 5)
    print(f"assign_faces 5 faces vs 100,000, median: {t_assign * 1e3:.1f} ms (ids as a list: "
          f"{t_list * 1e3:.1f} ms); seed-style nearest face by np.linalg.norm "
          f"{t_naive * 1e3:.1f} ms; ratio {t_assign / t_naive:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", help="dev-set folder (default: ../shared/faces/dev)")
    parser.add_argument("--no-scale", action="store_true", help="skip the 50k/100k timings")
    parser.add_argument("--landmarks", choices=LANDMARKS, default="large",
                        help="encodings from 68-point (large: FaceEngine, the product; default) "
                             "or 5-point landmarks (small: face_recognition's default)")
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    dev = find_dev(args.dev)
    if dev is None:
        print("SKIPPED dev-set tables: no labelled faces at "
              f"{' or '.join(map(str, DEV_DIRS))} (pass --dev DIR)")
    else:
        warnings.simplefilter("ignore", FutureWarning)
        enc, files, ident, photos = load_encodings(dev, args.landmarks)
        print(f"dev set {dev}: {len(photos)} photos, {len(enc)} faces, "
              f"{len(set(ident))} identities; {args.landmarks} encodings cached in "
              f"{cache_path(args.landmarks)}")
        distance_table(enc, ident, args.landmarks)
        rng = np.random.default_rng(7)
        runs = make_runs(files, ident, photos, rng)
        incremental_table(enc, files, ident, runs)
        recluster_table(enc, files, ident, runs)
        extra = np.random.default_rng(11)
        runs["people13x100"] = [people_run(files, ident, extra, PEOPLE)
                                for _ in range(EXTRA_GALLERIES)]
        fine_table(enc, files, ident, runs)
        gallery_size_table(enc, files, ident, rng)
        consistency(enc, files, ident, runs)
    if not args.no_scale:
        scale()
    return 0


if __name__ == "__main__":
    sys.exit(main())
