"""Recognition over the whole gallery: search by photo, and re-clustering every face.

Both read embeddings from the process's :class:`~services.face_index.FaceIndex` (or, for
re-clustering, one projection query), never from the image blobs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import typing as t
from collections import Counter
from collections import defaultdict

import numpy as np

from errors import ClusteringError
from errors import ConflictError
from errors import FaceDetectionError
from services import bookkeeping
from services import budget
from services import clustering
from services import corrections
from services import imaging
from services import people
from services import runs
from services import storage
from services.context import Gallery
from services.storage import Store

log = logging.getLogger(__name__)

Doc = dict[str, t.Any]

#: The distance at which dlib's face model was calibrated to tell people apart.
MODEL_THRESHOLD = 0.6
RECLUSTER_LOCK = bookkeeping.RECLUSTER_LOCK
RECLUSTER_LOCK_TTL = 900.0


def confidence(distance: float) -> float:
    """Map a face distance to 0..1: 1.0 at distance 0, 0.5 at 0.6, falling towards 0 beyond.

    Below the model's 0.6 boundary the curve stays high for clear matches and drops
    steeply near the boundary; above it, it falls linearly to 0 at 1.0 (the shape the
    face_recognition authors suggest). It depends on the distance only, never on the
    tolerance asked for, so one pair of faces always gets one confidence.
    """
    if distance > MODEL_THRESHOLD:
        return round(max(0.0, (1.0 - distance) / (2.0 * (1.0 - MODEL_THRESHOLD))), 4)
    linear = 1.0 - distance / (MODEL_THRESHOLD * 2.0)
    return round(linear + (1.0 - linear) * math.pow((linear - 0.5) * 2.0, 0.2), 4)


# -- search -------------------------------------------------------------------------------

def search_by_image(gallery: Gallery, data: bytes, *, tolerance: float, limit: int,
                    group_by: str = "person") -> Doc:
    """Find the persons (or faces) nearest each face of a photo; nothing is stored.

    :raise FileValidationError: the bytes are not a supported image.
    :raise FaceDetectionError: the photo shows no face.
    """
    started = time.perf_counter()
    settings = gallery.settings
    formats, max_pixels = settings["ALLOWED_EXTENSIONS"], settings["IMAGE_MAX_PIXELS"]
    width, height = imaging.probe(data, allowed_formats=formats, max_pixels=max_pixels)
    # The decoded photo is held under the process's pixel budget, as an upload's is.
    with budget.for_process(max_pixels).hold(width * height):
        decoded = imaging.decode_upload(data, allowed_formats=formats, max_pixels=max_pixels)
        # Detected on a copy of FACE_DETECTION_MAX_DIMENSION, encoded at full size: boxes are
        # in the query photo's (upright) pixels.
        found = gallery.engine.analyse(decoded.rgb)
        del decoded
    if not found:
        raise FaceDetectionError("No faces detected in the uploaded image")
    encoding_time = time.perf_counter() - started

    index = gallery.sync_index()
    matches: list[Doc] = []
    query_faces = []
    for number, face in enumerate(found):
        location = _location(face.box)
        query_faces.append({"query_face_index": number, "face_location": location,
                            "quality_score": round(face.quality, 4)})
        seen: set[str] = set()
        for face_id, person_id, image_id, distance in index.nearest(face.encoding, tolerance):
            if group_by == "person":
                if person_id in seen:
                    continue
                seen.add(person_id)
            matches.append({
                "person_id": person_id, "face_id": face_id, "image_id": image_id,
                "distance": round(distance, 4), "threshold": tolerance,
                "confidence": confidence(distance),
                "query_face_index": number, "query_face_location": location,
            })
    matches.sort(key=lambda m: (m["distance"], m["query_face_index"]))
    total = len(matches)
    matches = matches[:limit]
    names = people.person_names(gallery.store, {m["person_id"] for m in matches})
    for match in matches:
        match["person_name"] = names.get(match["person_id"])
    return {
        "matches": matches, "total_matches": total, "faces_in_query": len(found),
        "query_faces": query_faces, "tolerance": tolerance, "group_by": group_by,
        "faces_searched": len(index),
        "search_time": round(time.perf_counter() - started - encoding_time, 4),
        "processing_time": round(time.perf_counter() - started, 3),
    }


def _location(box: tuple[int, int, int, int]) -> Doc:
    top, right, bottom, left = box
    return {"top": top, "right": right, "bottom": bottom, "left": left}


# -- re-clustering ------------------------------------------------------------------------

_CLUSTER_FIELDS = {"embedding": 1, "person_id": 1, "image_id": 1, "is_manual_assignment": 1,
                   "quality_score": 1}


def recluster(gallery: Gallery, *, eps: float, min_samples: int,
              preserve_manual: bool = True, by: str = "", dry_run: bool = False,
              moves_limit: int = 100, moves_offset: int = 0) -> Doc:
    """Re-group every face; manual faces stay put and persons keep their ids and names.

    A real run is recorded as a numbered run (:mod:`services.runs`) that can be rolled back;
    ``by`` says who asked. ``dry_run`` computes the same grouping and answers its diff (the
    moves paged by ``moves_limit``/``moves_offset``) without writing anything at all.

    :raise ConflictError: another re-clustering (or a rollback) is running (409).
    """
    if dry_run:
        # No lock either: a preview changes nothing, so it never makes a correction wait.
        plan = plan_recluster(gallery.store, eps=eps, min_samples=min_samples,
                              preserve_manual=preserve_manual)
        return runs.dry_run_result(plan.faces, plan.targets, plan.persons, plan.created,
                                   _plan_result(plan), moves_limit=moves_limit,
                                   moves_offset=moves_offset)
    result = recluster_store(gallery.store, eps=eps, min_samples=min_samples,
                             preserve_manual=preserve_manual, by=by)
    gallery.sync_index()  # reload this worker's index now, not on the next request
    return result


def recluster_store(store: Store, *, eps: float, min_samples: int,
                    preserve_manual: bool = True, by: str = "") -> Doc:
    """Re-cluster and record the run, under the re-clustering lock; returns the summary
    (with ``run_number`` and ``churn``).

    :raise ConflictError: another re-clustering (or a rollback) is running (409).
    """
    holder = f"{os.getpid()}:{storage.new_id()}"
    if not store.acquire_lock(RECLUSTER_LOCK, holder, RECLUSTER_LOCK_TTL):
        raise ConflictError("A re-clustering or rollback is already running; try again when "
                            "it ends")
    try:
        # Numbered before the journal names it: a kill in between only skips a number.
        number = store.next_seq(runs.RUN_COUNTER)
        # It may touch every person: repair of a killed one recounts them all, marks its
        # run interrupted, and releases the lock when its process is gone.
        with bookkeeping.journal(store, "recluster", lock=[RECLUSTER_LOCK, holder], run=number):
            plan = plan_recluster(store, eps=eps, min_samples=min_samples,
                                  preserve_manual=preserve_manual)
            params = {"tolerance": eps, "min_samples": min_samples,
                      "preserve_manual": preserve_manual}
            runs.begin_run(store, number, params=params, by=by, faces=plan.faces,
                           targets=plan.targets, persons=plan.persons, created=plan.created)
            result = _apply_plan(store, plan, number)
            result = runs.end_run(store, number, result)
    finally:
        store.release_lock(RECLUSTER_LOCK, holder)
    return result


@dataclasses.dataclass
class Plan:
    """What a re-clustering would do, computed from reads alone.

    ``targets[i]`` is the person ``faces[i]`` ends in; persons in ``new_people`` are not
    numbered yet (the counter is a write: :func:`_apply_plan` reserves their numbers).
    """

    started: float
    faces: list[Doc]
    eps: float
    min_samples: int
    targets: list[str] = dataclasses.field(default_factory=list)
    fixed: list[str | None] = dataclasses.field(default_factory=list)
    new_people: dict[int, Doc] = dataclasses.field(default_factory=dict)
    absorbed: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    persons: dict[str, Doc] = dataclasses.field(default_factory=dict)

    @property
    def created(self) -> list[str]:
        """The new persons' ids, in the order they are numbered."""
        return [person["_id"] for person in self.new_people.values()]

    @property
    def moves(self) -> list[tuple[Doc, str]]:
        return [(f, t) for f, t in zip(self.faces, self.targets, strict=True)
                if f["person_id"] != t]


def plan_recluster(store: Store, *, eps: float, min_samples: int, preserve_manual: bool
                   ) -> Plan:
    """Read every face, the corrections and the persons, cluster, and decide each face's
    person; writes nothing (not even the person-number counter).

    :raise ClusteringError: the clustering failed (500).
    """
    started = time.perf_counter()
    faces = list(store.iter_faces({}, _CLUSTER_FIELDS))
    plan = Plan(started=started, faces=faces, eps=eps, min_samples=min_samples)
    if not faces:
        return plan
    embeddings = np.stack([storage.embedding_from_bytes(f["embedding"]) for f in faces])
    current = [f["person_id"] for f in faces]
    manual = [bool(f.get("is_manual_assignment")) for f in faces]
    fixed = [p if (m and preserve_manual) else None for p, m in zip(current, manual, strict=True)]
    try:
        log.info("re-clustering %d faces (eps %.2f, min_samples %d): %.1f s reading",
                 len(faces), eps, min_samples, time.perf_counter() - started)
        # The user's "not this person" and "not the same people" enter as cannot-link.
        cannot_link, forbidden = corrections.constraints_for(store, faces)
        labels = clustering.cluster_faces(embeddings, [f["image_id"] for f in faces], eps=eps,
                                          min_samples=min_samples, fixed=fixed,
                                          cannot_link=cannot_link)
        # Manual faces shape the clusters (faces fixed to different persons never share one)
        # and vote like any face, but never move: a cluster goes to the person holding most
        # of its faces, so one face a user moved out of "Eileen" does not drag Eileen's other
        # faces after it.
        owners, absorbed = clustering.match_clusters_to_persons(labels, current,
                                                                forbidden=forbidden)
    except (ValueError, MemoryError) as err:
        raise ClusteringError("Face clustering algorithm failed",
                              details={"reason": str(err)}) from err

    labels = [int(x) for x in labels]
    # A new person only for a cluster that receives a face; numbered when applied.
    fresh = sorted({x for x, pinned in zip(labels, fixed, strict=True)
                    if not pinned and owners.get(x) is None})
    new_people = {x: bookkeeping.new_person_doc(store, number=0) for x in fresh}
    targets = [pinned or owners.get(x) or new_people[x]["_id"]
               for x, pinned in zip(labels, fixed, strict=True)]
    _keep_one_face_per_photo(store, faces, targets, fixed, new_people)
    plan.targets, plan.fixed, plan.new_people, plan.absorbed = (targets, fixed, new_people,
                                                                absorbed)
    plan.persons = {p["_id"]: p for p in store.iter_persons()}
    return plan


def _plan_result(plan: Plan, *, deleted: int | None = None) -> Doc:
    """The summary a run answers; a dry run predicts ``persons_deleted`` from the plan."""
    kept = set(plan.targets)
    if deleted is None:
        gone = {f["person_id"] for f, _ in plan.moves} - kept
        deleted = len(gone)
        merged = sum(1 for persons in plan.absorbed.values() for p in persons if p in gone)
    else:
        merged = 0
    return _recluster_result(
        plan.started, faces=len(plan.faces), persons_created=len(plan.new_people),
        persons_merged=merged, persons_deleted=deleted, faces_moved=len(plan.moves),
        manual_preserved=sum(1 for x in plan.fixed if x is not None),
        persons_total=len(kept), eps=plan.eps, min_samples=plan.min_samples)


def _apply_plan(store: Store, plan: Plan, run: int) -> Doc:
    """Write a plan: number and insert the new persons, move the faces, settle the persons
    they left (deleted when empty, their records passed on) and the thumbnails."""
    started, faces, targets = plan.started, plan.faces, plan.targets
    if not faces:
        return _recluster_result(started, faces=0, eps=plan.eps, min_samples=plan.min_samples)
    new_people = plan.new_people
    if new_people:
        # Their numbers in one reservation, in the plan's order.
        last = store.next_seq("person_number", len(new_people))
        for k, person in enumerate(new_people.values()):
            number = last - len(new_people) + 1 + k
            name = f"Person {number}"
            person.update(number=number, name=name, name_lc=name.lower())

    moves = plan.moves
    incoming: dict[str, list[Doc]] = defaultdict(list)
    for face, target in moves:
        incoming[target].append(face)
    created = set(plan.created)
    for person in new_people.values():
        # Written complete: every face of a new person arrives by this re-clustering.
        own = incoming[person["_id"]]
        best = bookkeeping.best_face(own)
        person.update(face_count=len(own), image_count=len(own),
                      manual_face_count=0,
                      thumbnail_face_id=best["_id"], thumbnail_quality=bookkeeping.quality_of(best))
    thumbnails = plan.persons
    store.insert_persons(list(new_people.values()))
    log.info("re-clustering: %d groups after %.1f s; writing %d moves, %d new persons",
             len(set(targets)), time.perf_counter() - started, len(moves), len(new_people))
    _apply_moves(store, moves, created, run)
    store.new_epoch()  # every worker reloads its embedding index once

    kept = set(targets)
    moved = {f["_id"] for f, _ in moves}
    touched = ({f["person_id"] for f, _ in moves} | set(incoming)) - created
    deleted = []
    heirs: dict[str, Counter[str]] = defaultdict(Counter)
    for face, target in moves:
        heirs[face["person_id"]][target] += 1
    for person_id in touched:
        thumbnail = thumbnails.get(person_id, {})
        if person_id not in kept and heirs[person_id]:
            # Its records would go with it, and the next re-clustering could join what the
            # user kept apart: the person holding most of its faces takes them over first.
            corrections.pass_on(store, person_id, heirs[person_id].most_common(1)[0][0])
        # Only a person none of whose faces stayed can be empty (faces uploaded meanwhile
        # keep it alive: the database decides).
        if person_id not in kept and bookkeeping.delete_if_empty(store, person_id):
            deleted.append(person_id)
        elif person_id not in kept or thumbnail.get("thumbnail_face_id") in moved:
            bookkeeping.refresh_thumbnail(store, person_id)
        elif incoming[person_id]:
            best = bookkeeping.best_face(incoming[person_id])
            if bookkeeping.quality_of(best) > thumbnail.get("thumbnail_quality", -1.0):
                store.offer_thumbnail(person_id, best["_id"], bookkeeping.quality_of(best))
    # An old person that kept no cluster was merged into the cluster holding most of it.
    merged = sum(1 for persons in plan.absorbed.values() for p in persons if p in deleted)
    result = _plan_result(plan, deleted=len(deleted))
    result["persons_merged"] = merged
    result["processing_time"] = round(time.perf_counter() - started, 3)
    return result


def _keep_one_face_per_photo(store: Store, faces: list[Doc], targets: list[str],
                             fixed: list[str | None], new_people: dict[int, Doc]) -> None:
    """Keep two faces of one photo out of one person, changing as little as possible.

    Clusters never hold two faces of one photo, but a person can end with two clusters' worth
    of faces: its manual faces stay where the user put them while a cluster it wins by
    majority brings faces of the same photos. Faces that stay put (manual ones first) keep
    their place; a face whose move would collide stays with its current person instead, and
    only when that collides too does it get a person of its own.
    """
    owner: set[tuple[str, str]] = set()
    order = sorted(range(len(faces)), key=lambda i: (
        fixed[i] is None, faces[i]["person_id"] != targets[i]))
    for i in order:
        image_id, home = faces[i]["image_id"], faces[i]["person_id"]
        if (targets[i], image_id) in owner:
            if (home, image_id) not in owner:
                targets[i] = home
            else:
                person = bookkeeping.new_person_doc(store, number=0)  # numbered when applied
                new_people[-1 - len(new_people)] = person
                targets[i] = person["_id"]
        owner.add((targets[i], image_id))


def _apply_moves(store: Store, moves: list[tuple[Doc, str]], created: set[str], run: int
                 ) -> None:
    """Write the new person of each moved face, then the net counter change per person.

    Persons in ``created`` were inserted with their final counts already.
    """
    # A manual face moves only when preserve_manual is off; the algorithm placed it, so it
    # is an automatic assignment from then on.
    whole: dict[tuple[str, str], int] = Counter((f["person_id"], t) for f, t in moves)
    has_manual = {f["person_id"] for f, _ in moves if f.get("is_manual_assignment")}
    sizes = {source: store.count_faces_of_person(source) for source, _ in whole}
    delta: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for face, target in moves:
        delta[face["person_id"]][0] -= 1
        delta[target][0] += 1
        if face.get("is_manual_assignment"):
            delta[face["person_id"]][1] -= 1

    def joins_whole(source: str, target: str) -> bool:
        return sizes[source] == whole[(source, target)] and source not in has_manual

    for source, target in whole:
        if joins_whole(source, target):
            # A whole person joins another: one indexed update instead of one per face. It
            # also takes faces uploaded since the read: count what it really moved.
            extra = (store.move_all_faces(source, target, via="recluster", run=run)
                     - whole[(source, target)])
            delta[source][0] -= extra
            delta[target][0] += extra
    for face, target in moves:
        if not joins_whole(face["person_id"], target):
            store.set_face_person(face["_id"], target, manual=False, via="recluster", run=run)
    for person_id, (faces, manual) in delta.items():
        if person_id not in created and (faces or manual):
            store.adjust_person_counts(person_id, faces, faces, manual=manual)


def _recluster_result(started: float, *, faces: int, persons_created: int = 0,
                      persons_merged: int = 0, persons_deleted: int = 0, faces_moved: int = 0,
                      manual_preserved: int = 0, persons_total: int = 0, eps: float = 0.0,
                      min_samples: int = 1) -> Doc:
    return {
        "faces_processed": faces, "persons_created": persons_created,
        "persons_merged": persons_merged, "persons_deleted": persons_deleted,
        "faces_moved": faces_moved, "manual_assignments_preserved": manual_preserved,
        "persons_total": persons_total, "tolerance": eps, "min_samples": min_samples,
        "processing_time": round(time.perf_counter() - started, 3),
    }
