"""The faces of an import: exported boxes matched to stored faces, and the matched faces
moved into their persons in bulk.

An import moves every face of a gallery at once (after a reset and a re-upload, each one
leaves the person its upload made). Moved one by one as a hand move does, that is about ten
database writes a face; here a batch of photos is moved with one write a face plus a few
per person touched. The batch is planned in
memory under the re-clustering lock (hand corrections wait meanwhile, as during a
re-clustering, so no other change can put a second face of a photo into a person between
the plan and the writes), journalled as one intent naming every face and person it may
touch, and each person's counters, thumbnail and emptiness are settled once at its end.
"""

from __future__ import annotations

import time
import typing as t
from collections import defaultdict

from errors import ConflictError
from services import bookkeeping
from services import processes
from services import storage
from services.storage import Store

Doc = dict[str, t.Any]

#: An exported box and a stored one are the same face above this intersection over union.
#: The same bytes and detector give the same box (IoU 1.0); two faces of one photo rarely
#: overlap by a third of their union; 0.5 is the PASCAL VOC bar for "the same object".
MIN_IOU = 0.5
#: Photos moved under one lock and one intent: bounds the intent's size and the time hand
#: corrections wait.
BATCH_PHOTOS = 200
#: The lock an import batch holds; a batch takes seconds (200 photos of 2 faces: ~3 s on the
#: embedded store), so a killed one frees it soon.
LOCK_TTL = 60.0
LOCK_WAIT = 10.0


def iou(a: Doc, b: Doc) -> float:
    """Intersection over union of two ``{top, right, bottom, left}`` boxes (0 when either
    is empty)."""
    width = min(a["right"], b["right"]) - max(a["left"], b["left"])
    height = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height

    def area(box: Doc) -> float:
        return max(0, box["right"] - box["left"]) * max(0, box["bottom"] - box["top"])

    return inter / (area(a) + area(b) - inter)


def match_faces(local: list[Doc], exported: list[Doc], scale: float = 1.0
                ) -> dict[int, Doc]:
    """Pair exported boxes with stored faces of one photo, best overlap first, each face at
    most once; returns {index in ``exported``: stored face} for pairs at or above MIN_IOU.

    ``scale``: this gallery's stored width over the exporting gallery's (boxes are in each
    one's stored pixels)."""
    candidates = []
    for i, entry in enumerate(exported):
        box = {side: value * scale for side, value in entry["box"].items()}
        for face in local:
            overlap = iou(box, face["face_location"])
            if overlap >= MIN_IOU:
                candidates.append((overlap, i, face["_id"], face))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    matched: dict[int, Doc] = {}
    taken: set[str] = set()
    for _, i, face_id, face in candidates:
        if i not in matched and face_id not in taken:
            matched[i] = face
            taken.add(face_id)
    return matched


class Outcome(t.NamedTuple):
    """What a batch did: faces assigned, faces in place already, ``(entry, reason)`` of the
    faces left, persons created, persons that were here."""

    assigned: int
    already: int
    left: list[tuple[Doc, str]]
    persons_created: set[str]
    persons_matched: set[str]


def plan_photo(local: list[Doc], exported: list[Doc], persons: t.Container[str],
               scale: float) -> tuple[list[tuple[Doc, Doc]], list[str], list[tuple[Doc, str]]]:
    """The moves one photo needs: ``(stored face, exported entry)`` pairs, the persons of
    the faces in place by hand already, and the entries left with their reason.

    Two faces of a photo are never one person: a move into a person another face of the
    photo is in waits until that face has left (two faces trading persons); one that can
    never go is left as ``photo_has_another_face_of_person``."""
    matched = match_faces(local, exported, scale)
    left: list[tuple[Doc, str]] = []
    wanted: list[tuple[Doc, Doc]] = []
    already: list[str] = []
    for i, entry in enumerate(exported):
        face = matched.get(i)
        if face is None:
            left.append((entry, "no_face_overlaps_box"))
        elif entry["person_id"] not in persons:
            left.append((entry, "person_not_in_document"))
        elif face["person_id"] == entry["person_id"] and face.get("is_manual_assignment"):
            already.append(face["person_id"])
        else:
            wanted.append((face, entry))
    where = {f["_id"]: f["person_id"] for f in local}
    moves: list[tuple[Doc, Doc]] = []
    while wanted:
        waiting = []
        for face, entry in wanted:
            target = entry["person_id"]
            if any(person == target for other, person in where.items() if other != face["_id"]):
                waiting.append((face, entry))
            else:
                where[face["_id"]] = target
                moves.append((face, entry))
        if len(waiting) == len(wanted):
            left.extend((entry, "photo_has_another_face_of_person") for _, entry in waiting)
            break
        wanted = waiting
    return moves, already, left


def apply_batch(store: Store, photos: list[tuple[Doc, list[Doc], float]],
                persons: dict[str, Doc]) -> Outcome:
    """Move the matched faces of ``photos`` (each: the stored image, its exported face
    entries, the box scale) into their exported persons, creating those absent.

    A batch with nothing to move writes nothing (no intent, no lock): importing again is
    free of writes.
    :raise ConflictError: a re-clustering or another import holds the lock for more than
        ``LOCK_WAIT`` seconds (409); batches done before stay done.
    """
    local = {image["_id"]: store.faces_of_image(image["_id"]) for image, _, _ in photos}
    outcome = _plan(photos, local, persons)
    if not outcome[0]:
        moves, already, left = outcome
        return Outcome(0, len(already), left, set(), set(already))
    # Named before the lock, from the faces read now: every face of the batch's photos, the
    # persons they are in and those they may go to (more than is moved is harmless).
    face_ids = [f["_id"] for faces in local.values() for f in faces]
    named = list(dict.fromkeys([*(f["person_id"] for faces in local.values() for f in faces),
                                *(e["person_id"] for _, exported, _ in photos for e in exported
                                  if e["person_id"] in persons)]))
    holder = f"import:{processes.claimant()}:{storage.new_id()}"
    with bookkeeping.journal(store, "import", faces=face_ids, persons=named,
                             images=list(local), lock=[bookkeeping.RECLUSTER_LOCK, holder]):
        _take_lock(store, holder)
        try:
            # Planned again under the lock: what was read before may have changed.
            local = {image["_id"]: store.faces_of_image(image["_id"]) for image, _, _ in photos}
            moves, already, left = _plan(photos, local, persons)
            created, assigned = _write(store, moves, persons)
        finally:
            store.release_lock(bookkeeping.RECLUSTER_LOCK, holder)
    matched = (set(already) | {e["person_id"] for _, e in moves}) - created
    return Outcome(assigned, len(already), left, created, matched)


def _plan(photos: list[tuple[Doc, list[Doc], float]], local: dict[str, list[Doc]],
          persons: dict[str, Doc]) -> tuple[list[tuple[Doc, Doc]], list[str],
                                            list[tuple[Doc, str]]]:
    moves: list[tuple[Doc, Doc]] = []
    already: list[str] = []
    left: list[tuple[Doc, str]] = []
    for image, exported, scale in photos:
        planned, in_place, missed = plan_photo(local[image["_id"]], exported, persons, scale)
        moves.extend(planned)
        already.extend(in_place)
        left.extend(missed)
    return moves, already, left


def _take_lock(store: Store, holder: str) -> None:
    deadline = time.monotonic() + LOCK_WAIT
    while not store.acquire_lock(bookkeeping.RECLUSTER_LOCK, holder, LOCK_TTL):
        if time.monotonic() > deadline:
            raise ConflictError("Faces are being re-clustered or imported; retry in a few "
                                "seconds", details={"retry_after_seconds": 5})
        time.sleep(0.05)


def _write(store: Store, moves: list[tuple[Doc, Doc]], persons: dict[str, Doc]
           ) -> tuple[set[str], int]:
    """Create the persons, move the faces, then settle each person once (inside the
    caller's intent, under the lock)."""
    if not moves:
        return set(), 0
    targets = list(dict.fromkeys(e["person_id"] for _, e in moves))
    created: set[str] = set()
    assigned = 0
    rejected = set(store.all_rejections())
    for person_id in targets:
        if _ensure_person(store, persons[person_id]):
            created.add(person_id)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    best: dict[str, tuple[float, str]] = {}
    gone: dict[str, set[str]] = defaultdict(set)
    changes = []
    for face, entry in moves:
        target = entry["person_id"]
        if (face["_id"], target) in rejected:
            # Importing is the user's latest word: a rejection saying otherwise goes.
            store.remove_rejection(face["_id"], target)
        # One write a face, by _id: on the embedded store ``$in`` over the ids reads the
        # whole collection, one update per face does not.
        before = store.import_face(face["_id"], target)
        if before is None:
            continue  # deleted meanwhile: nothing to count
        assigned += 1
        source, was_manual = before["person_id"], bool(before.get("is_manual_assignment"))
        if source == target:
            counts[target][2] += 0 if was_manual else 1
            continue
        # One face of a person per photo: each face is one image more or less.
        counts[target] = [counts[target][0] + 1, counts[target][1] + 1, counts[target][2] + 1]
        counts[source] = [counts[source][0] - 1, counts[source][1] - 1,
                          counts[source][2] - (1 if was_manual else 0)]
        changes.append((face["_id"], target))
        quality = bookkeeping.quality_of(before)
        if quality > best.get(target, (-1.0, ""))[0]:
            best[target] = (quality, face["_id"])
        gone[source].add(face["_id"])
    for person_id, (faces, images, manual) in counts.items():
        if faces or images or manual:
            store.adjust_person_counts(person_id, faces, images, manual=manual)
    store.log_face_changes(changes)
    for person_id, (quality, face_id) in best.items():
        store.offer_thumbnail(person_id, face_id, quality)
    for person_id, left in gone.items():
        _settle(store, person_id, left)
    for person_id in targets:
        if bookkeeping.delete_if_empty(store, person_id):
            created.discard(person_id)
    return created, assigned


def _ensure_person(store: Store, entry: Doc) -> bool:
    """Create the exported person when absent, with its id and name; True if created."""
    if store.find_person(entry["id"]) is not None:
        return False
    person = bookkeeping.new_person_doc(store, name=entry["name"])
    person.update(_id=entry["id"], named_by_user=entry["named_by_user"])
    try:
        store.insert_persons([person])
    except storage.DuplicateKeyError:
        return False  # created meanwhile by another import
    return True


def _settle(store: Store, person_id: str, left: set[str]) -> None:
    """After faces left a person: delete it if empty, else give it a thumbnail it holds."""
    if store.count_faces_of_person(person_id) == 0:
        bookkeeping.delete_if_empty(store, person_id)
        return
    person = store.find_person(person_id)
    if person is not None and person.get("thumbnail_face_id", "") in left | {""}:
        bookkeeping.refresh_thumbnail(store, person_id)
