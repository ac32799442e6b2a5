"""Quality figures of the people data, for a dashboard: what is unassigned, alone, in
conflict, probably duplicated or spread out, and how much the last re-clustering changed.

The costly part reads only this process's embedding index (:mod:`services.face_index`) and
is kept in ``gallery.memo`` for as long as the index's snapshot is the same object: any
upload, move, deletion or re-clustering makes a new one, so a repeated call costs a few
counts. Distances are the project's linkage (``docs/recognition.md``), computed by
:mod:`services.suggestions`. Measurements: ``bench/quality.py`` and README.
"""

from __future__ import annotations

import time
import typing as t

import numpy as np
import numpy.typing as npt

from services import curation
from services import people
from services import suggestions
from services.context import Gallery

Doc = dict[str, t.Any]

#: Pairs of likely duplicate persons counted at most (the list shows ``limit`` of them).
DUPLICATE_CAP = 10_000
_MEMO_KEY = "quality"


def quality_figures(gallery: Gallery, *, limit: int = 5) -> Doc:
    """Faces unassigned, persons of one face, same-photo conflicts, likely duplicate persons,
    per-person spread, churn of the last run and the share of manual assignments.

    Likely duplicates are pairs of persons whose average linkage is <= ``DBSCAN_EPS``
    (what a re-clustering would join) that share no photo and are not marked different
    people. A person's spread is the mean distance of each of its faces to its other faces
    (its mean pairwise distance); the worst ``limit`` persons are listed.
    """
    started = time.perf_counter()
    store = gallery.store
    eps = float(gallery.settings["DBSCAN_EPS"])
    tolerance = float(gallery.settings["FACE_RECOGNITION_TOLERANCE"])
    snapshot = gallery.sync_index().snapshot()
    not_same = frozenset(store.all_not_same())
    key = (eps, not_same)
    memo = gallery.memo.get(_MEMO_KEY)
    cached = memo is not None and memo[0] is snapshot and memo[1] == key
    if cached:
        figures = memo[2]  # type: ignore[index]
    else:
        figures = _compute(gallery, snapshot, eps=eps)
        gallery.memo[_MEMO_KEY] = (snapshot, key, figures)

    pairs = figures["pairs"][:limit]
    worst = figures["worst"][:limit]
    names = people.person_names(store, {p for a, b, _ in pairs for p in (a, b)}
                                | {p for p, _, _ in worst})
    total = figures["faces"]
    manual = store.count("faces", {"is_manual_assignment": True})
    run = store.latest_cluster_run()
    churn = (run.get("summary") or {}).get("churn") if run else None
    spread = figures["spread"]
    return {
        "faces_total": total,
        "persons_total": figures["persons"],
        "faces_unassigned": figures["unassigned"],
        "persons_of_one_face": figures["singletons"],
        "same_photo_conflicts": figures["conflicts"],
        "same_photo_conflict_examples": figures["conflict_examples"][:limit],
        "likely_duplicate_persons": {
            "count": figures["duplicates"], "threshold": eps,
            "count_capped": figures["duplicates"] >= DUPLICATE_CAP,
            "pairs": [{"person_id": a, "person_name": names.get(a), "other_person_id": b,
                       "other_person_name": names.get(b), "distance": round(d, 4)}
                      for a, b, d in pairs]},
        "spread": {
            "mean": _rounded(spread["mean"]), "median": _rounded(spread["median"]),
            "persons_measured": spread["measured"],
            "persons_over_threshold": spread["over"], "threshold": tolerance,
            "worst": [{"person_id": p, "person_name": names.get(p), "face_count": n,
                       "spread": round(s, 4)} for p, n, s in worst]},
        "last_run": None if run is None else {"number": run.get("number"), "churn": churn},
        "churn_last_run": churn,
        "manual_assignments": manual,
        "manual_share": round(manual / total, 4) if total else 0.0,
        "limit": limit, "cached": cached,
        "processing_time": round(time.perf_counter() - started, 4),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _compute(gallery: Gallery, snapshot: tuple[t.Any, ...], *, eps: float) -> Doc:
    """The figures that depend on the embeddings, once per snapshot."""
    embeddings, face_ids, person_ids, image_ids = snapshot
    tolerance = float(gallery.settings["FACE_RECOGNITION_TOLERANCE"])
    assigned = person_ids != ""
    unassigned = int(np.count_nonzero(~assigned))
    embeddings, face_ids = embeddings[assigned], face_ids[assigned]
    person_ids, image_ids = person_ids[assigned], image_ids[assigned]
    persons = suggestions.group(embeddings, person_ids)
    sizes = persons.sizes
    # Pairs never merged (shared photo, marked different) are not likely duplicates.
    excluded = curation.excluded_pairs(gallery.store, person_ids, image_ids)
    left, right, distances = suggestions.duplicate_pairs(
        persons, limit=DUPLICATE_CAP, max_distance=eps, excluded_pairs=excluded)
    conflicts, examples = same_photo_conflicts(face_ids, person_ids, image_ids)
    spread = person_spread(persons)
    measured = sizes > 1
    values = spread[measured]
    worst = np.flatnonzero(measured)[np.lexsort((persons.ids[measured],
                                                 -values))] if values.size else []
    return {
        "faces": int(len(face_ids)) + unassigned, "persons": int(len(persons.ids)),
        "unassigned": unassigned, "singletons": int(np.count_nonzero(sizes == 1)),
        "conflicts": conflicts, "conflict_examples": examples,
        "duplicates": int(len(distances)),
        "pairs": [(str(persons.ids[a]), str(persons.ids[b]), float(d))
                  for a, b, d in zip(left[:100].tolist(), right[:100].tolist(),
                                     distances[:100].tolist(), strict=True)],
        "spread": {"mean": float(values.mean()) if values.size else None,
                   "median": float(np.median(values)) if values.size else None,
                   "measured": int(values.size),
                   "over": int(np.count_nonzero(values > tolerance))},
        "worst": [(str(persons.ids[k]), int(sizes[k]), float(spread[k]))
                  for k in list(worst)[:100]],
    }


def same_photo_conflicts(face_ids: npt.ArrayLike, person_ids: npt.ArrayLike,
                         image_ids: npt.ArrayLike) -> tuple[int, list[Doc]]:
    """(Person, photo) pairs holding more than one face, counted (should be 0: no path puts
    two faces of one photo in one person), with up to 100 of them as examples."""
    faces = np.asarray(face_ids).astype(str)
    if not len(faces):
        return 0, []
    _, person_code = np.unique(np.asarray(person_ids).astype(str), return_inverse=True)
    _, image_code = np.unique(np.asarray(image_ids).astype(str), return_inverse=True)
    pair = person_code.astype(np.int64) * (int(image_code.max()) + 1) + image_code
    _, inverse, counts = np.unique(pair, return_inverse=True, return_counts=True)
    clashing = np.flatnonzero(counts > 1)
    examples = []
    people_arr, images_arr = np.asarray(person_ids).astype(str), np.asarray(image_ids).astype(str)
    for group_code in clashing[:100].tolist():
        rows = np.flatnonzero(inverse == group_code)
        examples.append({"person_id": str(people_arr[rows[0]]),
                         "image_id": str(images_arr[rows[0]]),
                         "face_ids": sorted(faces[rows].tolist())})
    return int(len(clashing)), examples


def person_spread(persons: suggestions.Persons) -> npt.NDArray[np.float64]:
    """Per person, the mean over its faces of each face's mean distance to its other faces
    (NaN for a person of one face)."""
    own = suggestions.own_distances(persons)[persons.rows]  # grouped by person again
    sizes = persons.sizes
    owner = np.repeat(np.arange(len(sizes)), sizes)
    sums = np.bincount(owner, weights=np.nan_to_num(own), minlength=len(sizes))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 1, sums / sizes, np.nan)
