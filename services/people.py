"""Persons and the faces in them: naming, moving, merging, deleting, and their bookkeeping.

A face's ``person_id`` is the source of truth. Each change writes it first, then adjusts the
persons' counters with ``$inc``, then logs the change for every worker's embedding index, then
deletes a person left without faces (the API reports that as auto-cleanup).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import typing as t
from collections.abc import Iterable

from errors import ConflictError
from errors import DocumentNotFoundError
from errors import ValidationError
from services import catalog
from services import images as imaging
from services import storage
from services.storage import Store

MAX_PERSON_NAME = 100
PERSON_LOCK_WAIT = 5.0
PERSON_LOCK_TTL = 30.0
#: Held while every face is re-clustered; hand corrections wait for it (409 meanwhile).
RECLUSTER_LOCK = "recluster"
PERSON_SORTS = {"name", "created_at", "face_count"}

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


def person_names(store: Store, person_ids: Iterable[str]) -> dict[str, str]:
    names = {}
    for person_id in person_ids:
        person = store.find_person(person_id)
        if person is not None:
            names[person_id] = person["name"]
    return names


def person_summary(person: Doc) -> Doc:
    thumbnail = person.get("thumbnail_face_id")
    return {
        "_id": person["_id"], "name": person["name"], "face_count": person["face_count"],
        "image_count": person["image_count"],
        "manual_face_count": person.get("manual_face_count", 0),
        "named_by_user": person.get("named_by_user", False),
        "thumbnail_url": f"/faces/{thumbnail}" if thumbnail else None,
        "thumbnail_face_id": thumbnail or None,
        "created_at": person["created_at"], "updated_at": person["updated_at"],
    }


def clean_person_name(name: t.Any) -> str:
    """A person's display name: trimmed, 1-100 characters."""
    return catalog.clean_name(name, max_length=MAX_PERSON_NAME)


# -- reading ------------------------------------------------------------------------------

def list_persons(store: Store, *, sort: str = "face_count", order: str | None = None,
                 q: str = "", limit: int = 50, offset: int = 0) -> Doc:
    """Persons sorted by ``sort``; ``q`` keeps names starting with it (case-insensitive)."""
    if sort not in PERSON_SORTS:
        raise ValidationError(f"'sort' must be one of {', '.join(sorted(PERSON_SORTS))}",
                              details={"field": "sort"})
    if order is None:
        order = "asc" if sort == "name" else "desc"
    if order not in {"asc", "desc"}:
        raise ValidationError("'order' must be asc or desc", details={"field": "order"})
    persons, total = store.persons_page(name_prefix=q.strip(), sort=sort,
                                        descending=order == "desc", limit=limit, offset=offset)
    return {"persons": [person_summary(p) for p in persons], "total": total, "limit": limit,
            "offset": offset, "sort": sort, "order": order}


def get_person(store: Store, person_id: str, *, limit: int = 50, offset: int = 0) -> Doc:
    """A person with one page of its faces and of its images, newest photo first."""
    person = store.get_person(person_id)
    faces = store.faces_of_person(person["_id"])
    image_ids = list(dict.fromkeys(f["image_id"] for f in faces))
    page_faces = faces[offset: offset + limit]
    page_images = [store.find_image(i) for i in image_ids[offset: offset + limit]]
    return {
        **person_summary(person),
        "faces": [face_summary(f) for f in page_faces],
        "images": [{"_id": i["_id"], "filename": i["filename"], "width": i["width"],
                    "height": i["height"], **catalog.image_urls(i["_id"]),
                    "created_at": i["created_at"]} for i in page_images if i],
        "faces_total": len(faces), "images_total": len(image_ids),
        "limit": limit, "offset": offset,
    }


def face_summary(face: Doc) -> Doc:
    return {
        "face_id": face["_id"], "image_id": face["image_id"], "person_id": face["person_id"],
        "face_location": face["face_location"], "quality_score": face.get("quality_score"),
        "is_manual_assignment": face.get("is_manual_assignment", False),
        "assigned_by": face.get("assigned_by", "auto"), "face_url": f"/faces/{face['_id']}",
        "created_at": face["created_at"],
    }


def get_face(store: Store, face_id: str) -> Doc:
    face = store.get_face(face_id)
    return {**face_summary(face), "person_name": person_names(store, [face["person_id"]]).get(
        face["person_id"])}


def face_crop(store: Store, face_id: str) -> tuple[bytes, str, str]:
    """The face's JPEG crop: (bytes, mime type, etag)."""
    crop = store.get_face_crop(face_id)
    data, mime_type = imaging.parse_data_uri(crop["cropped_face_base64"])
    return data, mime_type, hashlib.sha256(data).hexdigest()[:32]


def person_thumbnail(store: Store, person_id: str) -> tuple[bytes, str, str]:
    """The crop of the person's best-quality face."""
    person = store.get_person(person_id)
    face_id = person.get("thumbnail_face_id")
    if not face_id:
        best = _best_face(store, person["_id"])
        face_id = best["_id"] if best else ""
    return face_crop(store, face_id)


# -- changing -----------------------------------------------------------------------------

def refuse_during_recluster(store: Store) -> None:
    """409 while a re-clustering runs: it rewrites faces from what it read at its start."""
    if store.lock_holder(RECLUSTER_LOCK) is not None:
        raise ConflictError("Faces are being re-clustered; retry in a few seconds",
                            details={"retry_after_seconds": 5})


def rename_person(store: Store, person_id: str, name: t.Any) -> Doc:
    """Give a person a display name; returns the old and new names."""
    name = clean_person_name(name)
    # Names are labels, not keys: two persons may share one.
    old = store.set_person_fields(person_id, {"name": name, "name_lc": name.lower(),
                                              "named_by_user": True,
                                              "updated_at": storage.now()})
    return {"person_id": old["_id"], "old_name": old["name"], "new_name": name}


def move_face(store: Store, face_id: str, target_person_id: str) -> Doc:
    """Move a face to another person by hand; the face is marked manual."""
    refuse_during_recluster(store)
    face = store.get_face(face_id)
    target = store.get_person(target_person_id)
    if target["_id"] == face["person_id"]:
        raise ValidationError("The face already belongs to this person",
                              details={"face_id": face["_id"], "person_id": target["_id"]})
    source_deleted = _reassign(store, face, target["_id"])
    return {"face_id": face["_id"], "from_person_id": face["person_id"],
            "to_person_id": target["_id"], "is_manual_assignment": True,
            "source_person_deleted": source_deleted}


def move_face_to_new(store: Store, face_id: str, name: t.Any = None) -> Doc:
    """Move a face into a new person (named, or "Person N")."""
    refuse_during_recluster(store)
    face = store.get_face(face_id)
    clean = clean_person_name(name) if name is not None else None
    person = new_person_doc(store, name=clean)
    person["named_by_user"] = clean is not None
    store.insert_persons([person])
    try:
        source_deleted = _reassign(store, face, person["_id"])
    except BaseException:
        delete_if_empty(store, person["_id"])  # the face went away meanwhile
        raise
    return {"face_id": face["_id"], "old_person_id": face["person_id"],
            "new_person_id": person["_id"], "new_person_name": person["name"],
            "is_manual_assignment": True, "source_person_deleted": source_deleted}


def merge_persons(store: Store, target_id: str, source_ids: t.Any) -> Doc:
    """Move every face of the source persons into the target, then delete the sources."""
    if not isinstance(source_ids, list) or not source_ids or not all(
            isinstance(s, str) for s in source_ids):
        raise ValidationError("'source_person_ids' must be a non-empty list of ids",
                              details={"field": "source_person_ids"})
    refuse_during_recluster(store)
    target = store.get_person(target_id)
    sources = [store.get_person(s) for s in dict.fromkeys(source_ids)]
    if any(s["_id"] == target["_id"] for s in sources):
        raise ValidationError("A person cannot be merged into itself",
                              details={"person_id": target["_id"]})
    target_images = {f["image_id"] for f in store.faces_of_person(
        target["_id"], projection={"image_id": 1})}
    moving = [f for s in sources for f in store.faces_of_person(s["_id"])]
    seen = set(target_images)
    for face in moving:
        if face["image_id"] in seen:
            raise ConflictError(
                f"Image {face['image_id']} would hold two faces of one person after the merge",
                details={"image_id": face["image_id"], "face_id": face["_id"]})
        seen.add(face["image_id"])
    for face in moving:
        _reassign(store, face, target["_id"], delete_empty=False)
    deleted = []
    for source in sources:
        if delete_if_empty(store, source["_id"]):
            deleted.append(source["_id"])
    person = store.get_person(target["_id"])
    return {"person_id": target["_id"], "name": person["name"], "faces_moved": len(moving),
            "persons_deleted": deleted, "face_count": person["face_count"]}


def _reassign(store: Store, face: Doc, person_id: str, *, delete_empty: bool = True) -> bool:
    """Point ``face`` at ``person_id`` (manual), keep counters; True if the source emptied.

    The target person is locked while its photos are checked and the face moves, so two
    concurrent moves cannot both bring a face of one photo into it.
    """
    with person_lock(store, person_id):
        for other in store.faces_of_image(face["image_id"]):
            if other["_id"] != face["_id"] and other["person_id"] == person_id:
                raise ConflictError(
                    f"Image {face['image_id']} already has a face of this person "
                    f"({other['_id']}); two faces of one photo cannot be one person",
                    details={"image_id": face["image_id"], "face_id": other["_id"]})
        before = store.reassign_face(face["_id"], person_id)
    if before is None:
        raise DocumentNotFoundError.for_id("Face", face["_id"])
    # Counters follow what the face really was, not what this request read earlier.
    source_id = before["person_id"]
    if source_id == person_id:
        if not before.get("is_manual_assignment"):
            store.adjust_person_counts(person_id, 0, 0, manual=1)
        return False
    store.adjust_person_counts(person_id, 1, 1, manual=1)
    store.adjust_person_counts(source_id, -1, -1,
                               manual=-1 if before.get("is_manual_assignment") else 0)
    store.log_face_changes([(face["_id"], person_id)])
    store.offer_thumbnail(person_id, face["_id"], quality_of(before))
    return _settle_person(store, source_id, left_face_id=face["_id"], delete_empty=delete_empty)


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


def _settle_person(store: Store, person_id: str, *, left_face_id: str = "",
                   delete_empty: bool = True) -> bool:
    """After faces left a person: delete it if empty, else fix its thumbnail. True if deleted."""
    if store.count_faces_of_person(person_id) == 0:
        return delete_if_empty(store, person_id) if delete_empty else True
    person = store.find_person(person_id)
    if person is not None and person.get("thumbnail_face_id") in {left_face_id, ""}:
        refresh_thumbnail(store, person_id)
    return False


def _best_face(store: Store, person_id: str) -> Doc | None:
    faces = store.faces_of_person(person_id, projection={"quality_score": 1, "image_seq": 1})
    return best_face(faces) if faces else None


def refresh_thumbnail(store: Store, person_id: str) -> None:
    """Make the person's best-quality face its thumbnail."""
    best = _best_face(store, person_id)
    store.set_person_fields(person_id, {
        "thumbnail_face_id": best["_id"] if best else "",
        "thumbnail_quality": quality_of(best) if best else -1.0})


# -- removing images ----------------------------------------------------------------------

def remove_image(store: Store, image_id: str) -> Doc:
    """Delete an image, its faces and crops; persons left empty are deleted.

    Safe to run twice at once (a retry, or repair finishing it): each face is removed, and
    counted off its person, by one caller only.
    """
    image = store.find_image(image_id)
    faces = store.delete_faces(f["_id"] for f in store.faces_of_image(image_id))
    for face in faces:
        store.adjust_person_counts(face["person_id"], -1, -1,
                                   manual=-1 if face.get("is_manual_assignment") else 0)
    store.log_face_changes([(f["_id"], "") for f in faces])
    deleted = [f["person_id"] for f in faces
               if _settle_person(store, f["person_id"], left_face_id=f["_id"])]
    if image is not None:
        store.delete_image_docs(image)
    return {"deleted_image_id": image_id, "faces_deleted": len(faces),
            "persons_deleted": deleted}


def undo_upload(store: Store, image_id: str, person_ids: Iterable[str]) -> None:
    """Remove whatever a failed upload wrote and recount the persons it touched."""
    faces = store.delete_faces(f["_id"] for f in store.faces_of_image(image_id))
    store.log_face_changes([(f["_id"], "") for f in faces])
    image = store.find_image(image_id)
    if image is not None:
        store.delete_image_docs(image)
    else:
        store.delete_image_blob(image_id)
    for person_id in set(person_ids):
        recount_person(store, person_id)


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


def recount_person(store: Store, person_id: str) -> None:
    """Set a person's counters from its faces (the source of truth); delete it if empty."""
    faces = store.faces_of_person(person_id, projection=_COUNT_FIELDS)
    if not faces:
        store.delete_person(person_id)
        return
    if store.find_person(person_id) is None:
        return
    store.set_person_fields(person_id, _counts(faces))


def repair(store: Store, *, stale_after_seconds: float = 600.0) -> Doc:
    """Finish what a crashed worker left half done: pending uploads and unfinished deletes.

    An upload still ``pending`` after ``stale_after_seconds`` is not in flight any more: its
    faces and blob are removed and the persons it touched are recounted.
    """
    moment = storage.now()
    undone, finished = [], []
    for image in store.images_with_status("pending"):
        if (moment - image["created_at"]).total_seconds() < stale_after_seconds:
            continue
        touched = {f["person_id"] for f in store.faces_of_image(image["_id"])}
        undo_upload(store, image["_id"], touched)
        store.release_hash(image.get("sha256", ""), image["_id"])
        undone.append(image["_id"])
    for image in store.images_with_status("deleting"):
        started = image.get("deleting_at") or image["created_at"]
        if (moment - started).total_seconds() < stale_after_seconds:
            continue  # another worker may be deleting it right now
        remove_image(store, image["_id"])
        finished.append(image["_id"])
    return {"uploads_undone": undone, "deletes_finished": finished,
            "image_numbers_recovered": store.fill_image_gaps()}
