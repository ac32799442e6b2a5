"""Why a face is in its person: how it got there, how far it is from it, what the upload's
rule would choose for it today, its nearest faces, and the corrections that bind it.

"Today" is :func:`services.clustering.assign_faces` itself, the function uploads and drawn
faces are assigned with, run on the face as if it arrived now: against every other face
of the gallery, at ``FACE_RECOGNITION_TOLERANCE``, with the persons it may not join
forbidden. The distances to its own person and to the runner-up come from the same function
(average linkage: the mean distance to the person's faces, ``docs/recognition.md``).
"""

from __future__ import annotations

import math
import typing as t

import numpy as np

from services import clustering
from services import people
from services import storage
from services.context import Gallery

Doc = dict[str, t.Any]

LINKAGE = "average"


def explain_face(gallery: Gallery, face_id: str, *, limit: int = 5) -> Doc:
    """The face's person, provenance, distance against the threshold, the rule's choice
    today, its ``limit`` nearest faces in its person and in the runner-up, and constraints.

    :raise ValidationError: malformed id (400).
    :raise DocumentNotFoundError: unknown face (404).
    """
    store = gallery.store
    face = store.get_face(face_id, with_embedding=True)
    face_id, person_id = face["_id"], face["person_id"]
    tolerance = float(gallery.settings["FACE_RECOGNITION_TOLERANCE"])
    query = storage.embedding_from_bytes(face["embedding"]).astype(np.float64)[np.newaxis]
    embeddings, face_ids, person_ids, image_ids = gallery.sync_index().snapshot()
    # The gallery as the face would meet it arriving now: every other assigned face.
    others = (face_ids != face_id) & (person_ids != "")

    same_photo = [{"face_id": f["_id"], "person_id": f["person_id"]}
                  for f in store.faces_of_image(face["image_id"]) if f["_id"] != face_id]
    rejected = sorted(store.rejections_of_face(face_id))
    not_same = sorted(store.not_same_of(person_id)) if person_id else []
    blocked: dict[str, list[str]] = {}
    for reason, persons in (("same_photo", [f["person_id"] for f in same_photo]),
                            ("rejected", rejected), ("not_same", not_same)):
        for other in persons:
            if other and other != person_id:
                blocked.setdefault(other, []).append(reason)

    def mean_to(mask: np.ndarray, forbidden: set[str] | None = None,
                threshold: float = math.inf) -> tuple[str | None, float | None]:
        return clustering.assign_faces(query, embeddings[mask], person_ids[mask],
                                       tolerance=threshold,
                                       forbidden=None if forbidden is None else [forbidden])[0]

    own = others & (person_ids == person_id) if person_id else np.zeros(len(face_ids), bool)
    _, own_distance = mean_to(own) if own.any() else (None, None)
    runner_up, runner_distance = mean_to(others & (person_ids != person_id))
    today, today_distance = mean_to(others, set(blocked), tolerance)

    names = people.person_names(store, {p for p in (person_id, runner_up, today) if p})

    def nearest(mask: np.ndarray) -> list[Doc]:
        rows = np.flatnonzero(mask)
        if not len(rows):
            return []
        distances = clustering.face_distances(embeddings[rows].astype(np.float64), query)[:, 0]
        order = np.argsort(distances, kind="stable")[:limit]
        return [{"face_id": str(face_ids[rows[i]]), "image_id": str(image_ids[rows[i]]),
                 "distance": round(float(distances[i]), 4)} for i in order.tolist()]

    status = "unassigned" if not person_id else "alone" if own_distance is None else "assigned"
    answer: Doc = {
        "face_id": face_id, "image_id": face["image_id"], "person_id": person_id or None,
        "person_name": names.get(person_id), "status": status,
        "provenance": {**people.provenance(face), "assigned_at": face.get("updated_at")},
        "linkage": LINKAGE, "threshold": tolerance,
        "distance": _rounded(own_distance),
        "within_threshold": None if own_distance is None else own_distance <= tolerance,
        "assignment_today": {"person_id": today, "person_name": names.get(today) if today else None,
                             "distance": _rounded(today_distance),
                             "same_person": today is not None and today == person_id},
        "nearest_in_person": nearest(own),
        "runner_up": None if runner_up is None else {
            "person_id": runner_up, "person_name": names.get(runner_up),
            "distance": _rounded(runner_distance),
            "within_threshold": runner_distance is not None and runner_distance <= tolerance,
            "blocked_by": blocked.get(runner_up, []),
            "nearest_faces": nearest(others & (person_ids == runner_up))},
        "constraints": {"same_photo": same_photo, "rejected_from": rejected,
                        "not_same": not_same,
                        "blocked_persons": [{"person_id": p, "reasons": r}
                                            for p, r in sorted(blocked.items())]},
    }
    answer["reason"] = _reason(answer)
    return answer


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _reason(answer: Doc) -> str:
    """One sentence saying why the face is where it is (or nowhere)."""
    threshold, today = answer["threshold"], answer["assignment_today"]
    runner = answer["runner_up"]
    via = answer["provenance"]["assigned_via"]
    if answer["status"] == "assigned":
        distance = answer["distance"]
        if today["same_person"]:
            return (f"Its person is the nearest allowed one, {distance} away by average "
                    f"linkage, within the threshold {threshold}: the rule would put it there "
                    "today.")
        if today["person_id"]:
            return (f"Its person is {distance} away, but the rule would choose "
                    f"{today['person_id']} today ({today['distance']}); it is here by "
                    f"{via}.")
        return (f"Its person is {distance} away, over the threshold {threshold}: the rule "
                f"would start a new person today; it is here by {via}.")
    lead = ("The face has no person." if answer["status"] == "unassigned"
            else "The face is alone in its person.")
    if today["person_id"]:
        return (f"{lead} The rule would put it in {today['person_id']} today "
                f"({today['distance']} <= {threshold}).")
    if runner is None:
        return f"{lead} There is no other person to compare it with."
    if runner["within_threshold"] and runner["blocked_by"]:
        return (f"{lead} The nearest person, {runner['person_id']} ({runner['distance']}), "
                f"is within the threshold but blocked: {', '.join(runner['blocked_by'])}.")
    return (f"{lead} The nearest person, {runner['person_id']}, is {runner['distance']} "
            f"away, over the threshold {threshold}.")
