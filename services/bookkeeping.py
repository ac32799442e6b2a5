"""The persons' bookkeeping: counters, thumbnails, empty persons, locks, and undoing writes.

A face's ``person_id`` is the source of truth; a person's ``face_count``, ``image_count``,
``manual_face_count`` and thumbnail are derived from its faces and kept with ``$inc`` as faces
move. Everything here is shared by the persons API (:mod:`services.people`), uploads,
image deletion, re-clustering and crash repair (:mod:`services.repair`).

Counters and faces are separate writes, so each operation first journals what it will touch
(:func:`journal`): a process killed between them leaves an intent that repair recounts from.
"""

from __future__ import annotations

import contextlib
import os
import time
import typing as t
from collections.abc import Iterable

from errors import ConflictError
from errors import GalleryError
from services import processes
from services import storage
from services.storage import Store

PERSON_LOCK_WAIT = 5.0
PERSON_LOCK_TTL = 30.0
#: Held while every face is re-clustered; hand corrections wait for it (409 meanwhile).
RECLUSTER_LOCK = "recluster"
#: The ``thumbnail_quality`` of a cover chosen by hand (``PUT /persons/{id}``). No face scores
#: above 1, so :meth:`Store.offer_thumbnail`'s ``$max`` never replaces a cover, while every
#: path that picks the best face anew (the thumbnail face left, a recount) writes a real
#: quality and so ends the cover: one field holds both, and nothing else must be kept in step.
COVER_QUALITY = 1e6

Doc = dict[str, t.Any]


def new_person_doc(store: Store, *, face_count: int = 0, thumbnail_face_id: str = "",
                   thumbnail_quality: float = -1.0, name: str | None = None,
                   number: int | None = None) -> Doc:
    """A person document numbered from a counter, so "Person N" is never reused.

    ``number``: one the caller reserved already (``store.next_seq("person_number", k)``).
    """
    number = store.next_seq("person_number") if number is None else number
    moment = storage.now()
    name = name or f"Person {number}"
    return {
        "_id": storage.new_id(), "number": number, "name": name, "name_lc": name.lower(),
        "named_by_user": False, "face_count": face_count, "image_count": face_count,
        "manual_face_count": 0, "thumbnail_face_id": thumbnail_face_id,
        "thumbnail_quality": thumbnail_quality, "created_at": moment, "updated_at": moment,
    }


@contextlib.contextmanager
def journal(store: Store, op: str, *, persons: Iterable[str] = (), faces: Iterable[str] = (),
            images: Iterable[str] = (), undone_on_error: bool = False,
            **extra: t.Any) -> t.Iterator[str]:
    """Hold an intent naming every person (also those about to be created), face and image
    the operation may write, from before its first write until it is done.

    Ended on success and on a :class:`GalleryError` (refusals come before writes, and the
    operations undo their own partial writes on those), and on any exception when
    ``undone_on_error`` says the operation undoes whatever it wrote. Otherwise an exception,
    or a kill, leaves it for :func:`services.repair.finish_intents`, which recounts what it
    names.
    """
    intent_id = store.begin_intent(op, owner=processes.claimant(), persons=persons,
                                   faces=faces, images=images, **extra)
    ending = Exception if undone_on_error else GalleryError
    try:
        yield intent_id
    except ending:
        store.end_intent(intent_id)
        raise
    store.end_intent(intent_id)


def refuse_during_recluster(store: Store) -> None:
    """409 while a re-clustering runs: it rewrites faces from what it read at its start."""
    if store.lock_holder(RECLUSTER_LOCK) is not None:
        raise ConflictError("Faces are being re-clustered; retry in a few seconds",
                            details={"retry_after_seconds": 5})


@contextlib.contextmanager
def person_lock(store: Store, person_id: str) -> t.Iterator[None]:
    """Hold a short lock on one person: corrections into it take turns (409 after 5 s)."""
    name, holder = f"person:{person_id}", f"{os.getpid()}:{storage.new_id()}"
    deadline = time.monotonic() + PERSON_LOCK_WAIT
    while not store.acquire_lock(name, holder, PERSON_LOCK_TTL):
        if time.monotonic() > deadline:
            raise ConflictError("This person is being changed by another request; retry",
                                details={"person_id": person_id})
        time.sleep(0.02)
    try:
        yield
    finally:
        store.release_lock(name, holder)


def settle_person(store: Store, person_id: str, *, left_face_id: str = "",
                   delete_empty: bool = True) -> bool:
    """After faces left a person: delete it if empty, else fix its thumbnail. True if deleted."""
    if store.count_faces_of_person(person_id) == 0:
        return delete_if_empty(store, person_id) if delete_empty else True
    person = store.find_person(person_id)
    if person is not None and person.get("thumbnail_face_id") in {left_face_id, ""}:
        refresh_thumbnail(store, person_id)
    return False


def best_face_of(store: Store, person_id: str) -> Doc | None:
    faces = store.faces_of_person(person_id, projection={"quality_score": 1, "image_seq": 1})
    return best_face(faces) if faces else None


def refresh_thumbnail(store: Store, person_id: str) -> None:
    """Make the person's best-quality face its thumbnail."""
    best = best_face_of(store, person_id)
    store.set_person_fields(person_id, {
        "thumbnail_face_id": best["_id"] if best else "",
        "thumbnail_quality": quality_of(best) if best else -1.0})


def cover_of(person: Doc) -> str | None:
    """The face chosen by hand as the person's thumbnail, if one is."""
    chosen = float(person.get("thumbnail_quality", -1.0)) >= COVER_QUALITY
    return (person.get("thumbnail_face_id") or None) if chosen else None


def remove_image(store: Store, image_id: str) -> Doc:
    """Delete an image, its faces and crops; persons left empty are deleted.

    Safe to run twice at once (a retry, or repair finishing it): each face is removed, and
    counted off its person, by one caller only.
    """
    image = store.find_image(image_id)
    faces = store.delete_faces(_log_removal(store, image_id))
    for face in faces:
        store.adjust_person_counts(face["person_id"], -1, -1,
                                   manual=-1 if face.get("is_manual_assignment") else 0)
    deleted = [f["person_id"] for f in faces
               if settle_person(store, f["person_id"], left_face_id=f["_id"])]
    if image is not None:
        store.delete_image_docs(image)
    return {"deleted_image_id": image_id, "faces_deleted": len(faces),
            "persons_deleted": deleted}


def undo_upload(store: Store, image_id: str, person_ids: Iterable[str]) -> None:
    """Remove whatever a failed upload wrote and recount the persons it touched."""
    store.delete_faces(_log_removal(store, image_id))
    # Crops are written before their faces: a kill in between leaves crops no face names.
    store.delete_crops_of_image(image_id)
    image = store.find_image(image_id)
    if image is not None:
        store.delete_image_docs(image)
    else:
        store.delete_image_blob(image_id)
    for person_id in set(person_ids):
        recount_person(store, person_id)


def _log_removal(store: Store, image_id: str) -> list[str]:
    """Log an image's faces as deleted in ``face_changes``; returns their ids, to delete.

    Logged before they are deleted: a process killed in between leaves faces that repair
    deletes, where the other order would leave them in every worker's embedding index, as
    search hits on an image that answers 404. An index that reads a face after its deletion
    was logged does not load it (:class:`services.face_index.FaceIndex`)."""
    face_ids = [f["_id"] for f in store.faces_of_image(image_id)]
    store.log_face_changes([(face_id, "") for face_id in face_ids])
    return face_ids


def delete_if_empty(store: Store, person_id: str) -> bool:
    """Delete a person that holds no face; True if it was deleted.

    An upload in another worker can land a face in the person between the count and the
    delete: looking again afterwards brings the person back rather than leave that face
    pointing at nothing.
    """
    if store.count_faces_of_person(person_id) > 0:
        return False
    store.delete_person(person_id)
    if store.count_faces_of_person(person_id) > 0:
        restore_person(store, person_id)
        return False
    return True


def restore_person(store: Store, person_id: str) -> None:
    """Recreate a deleted person that faces still point at (a race with its deletion)."""
    faces = store.faces_of_person(person_id, projection=_COUNT_FIELDS)
    if not faces:
        return
    person = new_person_doc(store)
    person["_id"] = person_id
    person.update(_counts(faces))
    try:
        store.insert_persons([person])
    except storage.DuplicateKeyError:
        recount_person(store, person_id)


def _counts(faces: list[Doc]) -> Doc:
    best = best_face(faces)
    return {"face_count": len(faces), "image_count": len({f["image_id"] for f in faces}),
            "manual_face_count": sum(1 for f in faces if f.get("is_manual_assignment")),
            "thumbnail_face_id": best["_id"], "thumbnail_quality": quality_of(best)}


def best_face(faces: list[Doc]) -> Doc:
    """The face with the highest quality score (ties: the larger id, i.e. the newer)."""
    return max(faces, key=lambda f: (quality_of(f), f["_id"]))


def quality_of(face: Doc) -> float:
    return float(face.get("quality_score") or 0.0)


_COUNT_FIELDS = {"image_id": 1, "is_manual_assignment": 1, "quality_score": 1, "image_seq": 1}


def reconcile_person(store: Store, person_id: str) -> str:
    """Make a person agree with its faces, whatever a killed writer left; returns what was
    done: ``"deleted"`` (no face), ``"restored"`` (faces, no person), ``"recounted"`` (counts
    or thumbnail were wrong) or ``""`` (it was right)."""
    faces = store.faces_of_person(person_id, projection=_COUNT_FIELDS)
    if not faces:
        if store.find_person(person_id) is None:
            return ""
        return "deleted" if delete_if_empty(store, person_id) else "recounted"
    person = store.find_person(person_id)
    if person is None:
        restore_person(store, person_id)
        return "restored"
    counts = _counts(faces)
    own = {f["_id"] for f in faces}
    if person.get("thumbnail_face_id") in own:
        # Any face of its own resolves; only a missing one is replaced by the best.
        counts.pop("thumbnail_face_id")
        counts.pop("thumbnail_quality")
    if all(person.get(k) == v for k, v in counts.items()):
        return ""
    store.set_person_fields(person_id, counts)
    return "recounted"


def recount_person(store: Store, person_id: str) -> None:
    """Set a person's counters from its faces (the source of truth); delete it if empty."""
    faces = store.faces_of_person(person_id, projection=_COUNT_FIELDS)
    if not faces:
        store.delete_person(person_id)
        return
    person = store.find_person(person_id)
    if person is None:
        return
    counts = _counts(faces)
    if cover_of(person) in {f["_id"] for f in faces}:
        # A cover chosen by hand stays while its face is the person's.
        counts.pop("thumbnail_face_id")
        counts.pop("thumbnail_quality")
    store.set_person_fields(person_id, counts)
