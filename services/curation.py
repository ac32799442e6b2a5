"""What a user should look at next: persons that are probably one (merge suggestions) and
automatic faces that probably sit in the wrong person (the review queue).

Both read the process's embedding index, never the blobs; the math is in
:mod:`services.suggestions`.
"""

from __future__ import annotations

import math
import time
import typing as t

import numpy as np

from services import people
from services import recognition
from services import suggestions
from services.context import Gallery
from services.storage import Store

Doc = dict[str, t.Any]

#: Default radius of the gallery-wide pairs: a little beyond re-clustering's eps (0.61), so
#: the list holds what re-clustering would merge and the near misses worth a look.
DEFAULT_MAX_DISTANCE = 0.7
#: A face below this quality_score (0..1) is worth a second look: small, blurred or a
#: doubtful detection (services.face_engine.quality_score).
LOW_QUALITY = 0.3
_REVIEW_FIELDS = {"person_id": 1, "image_id": 1, "quality_score": 1, "is_manual_assignment": 1}


def excluded_pairs(store: Store, person_ids: t.Any, image_ids: t.Any) -> set[tuple[str, str]]:
    """Pairs never proposed: persons sharing a photo (a merge would be refused), and pairs
    a user marked as different people (``POST /persons/{id}/not-same``)."""
    pairs = suggestions.shared_image_pairs(person_ids, image_ids)
    for a, b in store.all_not_same():
        pairs |= {(a, b), (b, a)}
    return pairs


def _persons(gallery: Gallery) -> tuple[suggestions.Persons, set[tuple[str, str]]]:
    embeddings, _, person_ids, image_ids = gallery.sync_index().snapshot()
    persons = suggestions.group(embeddings, person_ids)
    return persons, excluded_pairs(gallery.store, person_ids, image_ids)


def _entry(persons: suggestions.Persons, k: int, names: dict[str, str], prefix: str = ""
           ) -> Doc:
    person_id = str(persons.ids[k])
    return {f"{prefix}person_id": person_id, f"{prefix}person_name": names.get(person_id),
            f"{prefix}face_count": int(persons.sizes[k])}


def suggest_for_person(gallery: Gallery, person_id: str, *, limit: int,
                       max_distance: float | None = None) -> Doc:
    """Persons most likely the same as this one, closest first.

    :raise DocumentNotFoundError: no such person (404).
    """
    started = time.perf_counter()
    person = gallery.store.get_person(person_id)
    persons, excluded = _persons(gallery)
    k = persons.index_of(person["_id"])
    found: list[tuple[int, float]] = []
    if k is not None:
        others, distances = suggestions.closest_to(
            persons, k, limit=limit, excluded_pairs=excluded,
            max_distance=math.inf if max_distance is None else max_distance)
        found = list(zip(others.tolist(), distances.tolist(), strict=True))
    names = people.person_names(gallery.store, [str(persons.ids[o]) for o, _ in found])
    return {
        "person_id": person["_id"], "person_name": person["name"],
        "suggestions": [{**_entry(persons, o, names), "distance": round(d, 4),
                         "confidence": recognition.confidence(d)} for o, d in found],
        "limit": limit, "max_distance": max_distance, "persons_compared": len(persons.ids),
        "processing_time": round(time.perf_counter() - started, 4),
    }


def suggest_pairs(gallery: Gallery, *, limit: int,
                  max_distance: float = DEFAULT_MAX_DISTANCE) -> Doc:
    """Pairs of persons most likely one across the whole gallery, closest first."""
    started = time.perf_counter()
    persons, excluded = _persons(gallery)
    left, right, distances = suggestions.duplicate_pairs(
        persons, limit=limit, max_distance=max_distance, excluded_pairs=excluded)
    ids = {str(persons.ids[k]) for k in (*left.tolist(), *right.tolist())}
    names = people.person_names(gallery.store, ids)
    pairs = [{**_entry(persons, a, names), **_entry(persons, b, names, "other_"),
              "distance": round(d, 4), "confidence": recognition.confidence(d)}
             for a, b, d in zip(left.tolist(), right.tolist(), distances.tolist(), strict=True)]
    return {"pairs": pairs, "limit": limit, "max_distance": max_distance,
            "persons_compared": len(persons.ids),
            "processing_time": round(time.perf_counter() - started, 4)}


def review_queue(gallery: Gallery, *, limit: int, offset: int) -> Doc:
    """Automatic faces most likely wrong first, each with its reasons.

    A face is listed when it is far from its person (mean distance to the person's other
    faces above the assignment tolerance: it would not join that person today), alone in its
    person, or of low quality. Order: ``score`` descending, where ``score`` is that mean
    distance over the tolerance (1.0 for a face alone: no evidence either way), plus
    ``1 - quality / LOW_QUALITY`` for a low-quality face. Faces placed by hand are the
    user's word and never listed.
    """
    tolerance = float(gallery.settings["FACE_RECOGNITION_TOLERANCE"])
    embeddings, face_ids, person_ids, image_ids = gallery.sync_index().snapshot()
    persons = suggestions.group(embeddings, person_ids)
    distances = suggestions.own_distances(persons)
    docs = {d["_id"]: d for d in gallery.store.iter_faces({}, _REVIEW_FIELDS)}
    counts = dict(zip(persons.ids.tolist(), persons.sizes.tolist(), strict=True))
    listed: list[Doc] = []
    for row, face_id in enumerate(face_ids.tolist()):
        doc = docs.get(face_id)
        if doc is None or doc.get("is_manual_assignment"):
            continue
        distance = float(distances[row])
        alone = np.isnan(distance)
        quality = doc.get("quality_score")
        reasons = []
        if not alone and distance > tolerance:
            reasons.append("far_from_person")
        if alone:
            reasons.append("alone")
        if quality is not None and quality < LOW_QUALITY:
            reasons.append("low_quality")
        if not reasons:
            continue
        score = 1.0 if alone else distance / tolerance
        if "low_quality" in reasons:
            score += 1.0 - quality / LOW_QUALITY
        listed.append({
            "face_id": face_id, "person_id": str(person_ids[row]),
            "image_id": str(image_ids[row]), "face_url": f"/faces/{face_id}",
            "distance": None if alone else round(distance, 4), "quality_score": quality,
            "person_face_count": counts[str(person_ids[row])], "reason": reasons[0],
            "reasons": reasons, "score": round(score, 4)})
    listed.sort(key=lambda f: (-f["score"], f["face_id"]))
    page = listed[offset: offset + limit]
    names = people.person_names(gallery.store, {f["person_id"] for f in page})
    for face in page:
        face["person_name"] = names.get(face["person_id"])
    return {"faces": page, "total": len(listed), "limit": limit, "offset": offset,
            "tolerance": tolerance, "low_quality": LOW_QUALITY}
