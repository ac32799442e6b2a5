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

from services import clustering
from services import curation
from services import storage
from services import suggestions
from services.context import Gallery

Doc = dict[str, t.Any]

Ints = npt.NDArray[np.intp]
Floats = npt.NDArray[np.float64]

# A float32 centroid distance may read up to ~1.5e-3 too high near 0
# (clustering.face_distances): candidates are taken this much beyond the radius.
_SLACK = 2e-3
#: float64 distances are within 1e-7 (clustering.face_distances); bounds keep this margin.
_BOUND_SLACK = 1e-6
#: Distances per matrix product when measuring one person's spread (float64: 32 MB).
SPREAD_CELLS = 1 << 22
_MEMO_KEY = "quality"


def quality_figures(gallery: Gallery, *, limit: int = 5, max_age: float = 0.0) -> Doc:
    """Faces unassigned, persons of one face, same-photo conflicts, likely duplicate persons,
    per-person spread, churn of the last run and the share of manual assignments.

    Likely duplicates are pairs of persons whose average linkage is <= ``DBSCAN_EPS``
    (what a re-clustering would join) that share no photo and are not marked different
    people. A person's spread is the mean distance of each of its faces to its other faces
    (its mean pairwise distance); the worst ``limit`` persons are listed. The embedding
    figures are computed again when the gallery changed, unless those kept were computed
    at most ``max_age`` seconds ago (a dashboard polling a gallery being filled).
    """
    started = time.perf_counter()
    store = gallery.store
    eps = float(gallery.settings["DBSCAN_EPS"])
    tolerance = float(gallery.settings["FACE_RECOGNITION_TOLERANCE"])
    snapshot = gallery.sync_index().snapshot()
    not_same = frozenset(store.all_not_same())
    key = (eps, not_same)
    memo = gallery.memo.get(_MEMO_KEY)
    fresh = memo is not None and memo[0] is snapshot and memo[1] == key
    cached = fresh or (memo is not None and memo[1][0] == eps
                       and time.monotonic() - memo[3] <= max_age)
    if cached:
        figures = memo[2]  # type: ignore[index]
    else:
        figures = _compute(gallery, snapshot, eps=eps)
        gallery.memo[_MEMO_KEY] = (snapshot, key, figures, time.monotonic(), storage.now())
    computed_at = gallery.memo[_MEMO_KEY][4]

    pairs = figures["pairs"][:limit]
    worst = figures["worst"][:limit]
    listed = {p for a, b, _ in pairs for p in (a, b)} | {p for p, _, _ in worst}
    # One pass over the persons for the names listed and the manual count: their counters
    # are kept equal to their faces' flags (tests/invariants.py), so it reads one document
    # a person instead of one a face.
    names, manual = {}, 0
    for person in store.iter_persons({"name": 1, "manual_face_count": 1}):
        manual += person.get("manual_face_count", 0)
        if person["_id"] in listed:
            names[person["_id"]] = person.get("name")
    total = figures["faces"]
    run = store.latest_finished_recluster()
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
        "limit": limit, "cached": cached, "up_to_date": fresh or not cached,
        "computed_at": computed_at,
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
    left, right, distances = likely_duplicates(persons, max_distance=eps,
                                               excluded_pairs=excluded)
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
    """Per person, the mean over its faces of each face's mean distance to its other faces,
    which is its mean pairwise distance (NaN for a person of one face).

    One matrix product per person (in row bands of :data:`SPREAD_CELLS` for a huge one):
    a loop over persons, not over pairs of faces.
    """
    sizes = persons.sizes
    spread = np.full(len(sizes), np.nan)
    for k in np.flatnonzero(sizes > 1).tolist():
        faces = persons.embeddings[persons.offsets[k]:persons.offsets[k + 1]]
        n = len(faces)
        band = max(1, SPREAD_CELLS // n)
        total = sum(float(clustering.face_distances(faces[i:i + band], faces).sum())
                    for i in range(0, n, band))
        spread[k] = total / (n * (n - 1))  # the diagonal adds nothing
    return spread


def likely_duplicates(persons: suggestions.Persons, *, max_distance: float,
                      excluded_pairs: t.Collection[tuple[str, str]] = (),
                      ) -> tuple[Ints, Ints, Floats]:
    """Every pair of persons whose average linkage is <= ``max_distance``, closest first:
    (left indices, right indices, distances), left < right; ``excluded_pairs`` (person ids,
    either order) left out.

    Candidates are the pairs whose centroids lie within ``max_distance`` (a lower bound of
    the linkage: :mod:`services.suggestions`), found in row bands; each is then measured
    by a tighter bound (each face's distance to the other person's centroid), and those left
    are measured exactly by :func:`linkage`. ``suggestions.duplicate_pairs`` wants the closest
    few and measures candidates pair by pair, best bound first; a count needs every pair
    within the radius, which this finds ~13x faster (``bench/quality.py``).
    """
    n = len(persons.ids)
    centroids = persons.centroids.astype(np.float32)
    band = max(1, suggestions.BAND_CELLS // max(n, 1))
    lefts, rights = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)]
    for low in range(0, n, band):
        squared = clustering.face_distances(centroids[low:low + band], centroids[low:],
                                            squared=True)
        rows, cols = np.nonzero(squared <= (max_distance + _SLACK) ** 2)
        upper = cols > rows  # each pair once (columns start at the band's first row)
        lefts.append((rows[upper] + low).astype(np.intp))
        rights.append((cols[upper] + low).astype(np.intp))
    left, right = np.concatenate(lefts), np.concatenate(rights)
    excluded = _pair_keys(persons, excluded_pairs)
    if len(excluded):
        keep = ~np.isin(left.astype(np.int64) * n + right, excluded)
        left, right = left[keep], right[keep]
    # A tighter bound, still by Jensen: each face's mean distance to the other person's faces
    # is at least its distance to that person's centroid. On 100k synthetic faces it leaves
    # 185 of 19,083 centroid candidates to measure (182 are within).
    bounds = np.maximum(_centroid_bounds(persons, left, right),
                        _centroid_bounds(persons, right, left))
    near = bounds <= max_distance + _BOUND_SLACK
    left, right = left[near], right[near]
    distances = linkage(persons, left, right)
    keep = distances <= max_distance
    left, right, distances = left[keep], right[keep], distances[keep]
    order = np.lexsort((right, left, distances))
    return left[order], right[order], distances[order]


def _pair_keys(persons: suggestions.Persons, pairs: t.Collection[tuple[str, str]]
               ) -> npt.NDArray[np.int64]:
    """Unordered person pairs as ``min * n + max`` over person indices; unknown ids dropped.
    Vectorised: a gallery's shared-photo pairs are tens of thousands."""
    if not pairs:
        return np.zeros(0, np.int64)
    ids = np.array(list(pairs), dtype=str).reshape(-1, 2)
    n = len(persons.ids)
    found = np.searchsorted(persons.ids, ids).clip(0, max(n - 1, 0))
    known = (persons.ids[found] == ids).all(axis=1) if n else np.zeros(len(ids), bool)
    a, b = found[known, 0].astype(np.int64), found[known, 1].astype(np.int64)
    return np.unique(np.minimum(a, b) * n + np.maximum(a, b))


def _groups(keys: Ints) -> t.Iterator[tuple[int, Ints]]:
    """(key, positions) for each distinct value of ``keys``."""
    if not len(keys):
        return
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    cuts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    for start, end in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
        yield int(ordered[start]), order[start:end]


def _centroid_bounds(persons: suggestions.Persons, left: Ints, right: Ints) -> Floats:
    """For each pair, the mean distance of ``left``'s faces to ``right``'s centroid: a lower
    bound of their average linkage."""
    result = np.empty(len(left))
    for k, mine in _groups(left):
        own = persons.embeddings[persons.offsets[k]:persons.offsets[k + 1]]
        result[mine] = clustering.face_distances(
            own, persons.centroids[right[mine]]).mean(axis=0)
    return result


def linkage(persons: suggestions.Persons, left: Ints, right: Ints) -> Floats:
    """Average-linkage distance between persons ``left[k]`` and ``right[k]`` (float64), as
    ``suggestions.linkage`` gives it, by one matrix product per left person against all its
    partners' faces (in column chunks of :data:`SPREAD_CELLS`)."""
    result = np.empty(len(left))
    sizes, offsets, faces = persons.sizes, persons.offsets, persons.embeddings
    for k, mine in _groups(left):
        own = faces[offsets[k]:offsets[k + 1]]
        partners = right[mine]
        widths = sizes[partners]
        chunk = (np.cumsum(widths) - 1) // max(1, SPREAD_CELLS // len(own))
        for part in np.unique(chunk).tolist():
            pick = np.flatnonzero(chunk == part)
            rows = np.concatenate([np.arange(offsets[p], offsets[p + 1])
                                   for p in partners[pick].tolist()])
            columns = clustering.face_distances(own, faces[rows]).sum(axis=0)
            starts = np.concatenate([[0], np.cumsum(widths[pick])[:-1]])
            result[mine[pick]] = np.add.reduceat(columns, starts) / (len(own) * widths[pick])
    return result
