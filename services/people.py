"""Persons and the faces in them, as the API shows and changes them: listing, naming,
moving and merging.

A face's ``person_id`` is the source of truth. Each change is journalled first (an intent
naming its faces and persons, also one about to be created), writes the face, then adjusts
the persons' counters (:mod:`services.bookkeeping`), then logs the change for every worker's
embedding index, then deletes a person left without faces (the API reports that as
auto-cleanup), and last clears the intent. Repair recounts what a killed change named.
"""

from __future__ import annotations

import typing as t
from collections.abc import Iterable

from errors import ConflictError
from errors import DocumentNotFoundError
from errors import ValidationError
from services import blobs
from services import bookkeeping
from services import catalog
from services import corrections
from services import storage
from services.storage import Store

MAX_PERSON_NAME = 100
PERSON_SORTS = {"name", "created_at", "face_count"}

Doc = dict[str, t.Any]


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
        "hidden": bool(person.get("hidden", False)),
        "favorite": bool(person.get("favorite", False)),
        "birth_date": person.get("birth_date") or None,
        "cover_face_id": bookkeeping.cover_of(person),
        "created_at": person["created_at"], "updated_at": person["updated_at"],
    }


def clean_person_name(name: t.Any, field: str = "name") -> str:
    """A person's display name: trimmed, 1-100 characters, no control characters."""
    return catalog.clean_name(name, max_length=MAX_PERSON_NAME, field=field)


# -- reading ------------------------------------------------------------------------------

def list_persons(store: Store, *, sort: str = "face_count", order: str | None = None,
                 q: str = "", limit: int = 50, offset: int = 0, include_hidden: bool = False,
                 favorite: bool = False) -> Doc:
    """Persons sorted by ``sort``; ``q`` keeps names starting with it (case-insensitive).

    Hidden persons are left out unless ``include_hidden``; ``favorite`` keeps favorites only.
    """
    if sort not in PERSON_SORTS:
        raise ValidationError(f"'sort' must be one of {', '.join(sorted(PERSON_SORTS))}",
                              details={"field": "sort"})
    if order is None:
        order = "asc" if sort == "name" else "desc"
    if order not in {"asc", "desc"}:
        raise ValidationError("'order' must be asc or desc", details={"field": "order"})
    persons, total = store.persons_page(name_prefix=q.strip(), sort=sort,
                                        descending=order == "desc", limit=limit, offset=offset,
                                        include_hidden=include_hidden, favorite_only=favorite)
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
        "not_same": store.not_same_of(person["_id"]),
        "limit": limit, "offset": offset,
    }


def face_summary(face: Doc) -> Doc:
    return {
        "face_id": face["_id"], "image_id": face["image_id"], "person_id": face["person_id"],
        "face_location": face["face_location"], "quality_score": face.get("quality_score"),
        "is_manual_assignment": face.get("is_manual_assignment", False),
        **provenance(face), "face_url": f"/faces/{face['_id']}",
        "created_at": face["created_at"],
    }


#: How a face came to its person (``assigned_via``); a run number goes with the last two.
ASSIGNED_VIA = ("upload", "move", "merge", "confirm", "drawn", "import", "recluster",
                "rollback")
_RUN_VIAS = ("recluster", "rollback")


def provenance(face: Doc) -> Doc:
    """``assigned_by``, ``assigned_via`` and, for a run's assignment, ``assigned_run``.

    A face written before ``assigned_via`` existed reads as "upload" when automatic and
    "move" when manual; a run number left by an earlier run is not shown once a later
    assignment of another kind replaced it.
    """
    manual = face.get("assigned_by", "manual" if face.get("is_manual_assignment") else "auto")
    via = face.get("assigned_via") or ("move" if manual == "manual" else "upload")
    found = {"assigned_by": manual, "assigned_via": via}
    if via in _RUN_VIAS and face.get("assigned_run"):
        found["assigned_run"] = int(face["assigned_run"])
    return found


def get_face(store: Store, face_id: str) -> Doc:
    face = store.get_face(face_id)
    return {**face_summary(face), "person_name": person_names(store, [face["person_id"]]).get(
        face["person_id"])}


def face_crop(store: Store, face_id: str) -> tuple[bytes, str, str]:
    """The face's JPEG crop: (bytes, mime type, etag)."""
    crop = store.get_face_crop(face_id)
    data = store.read_blob(crop, "crop")
    return data, crop.get("mime_type", "image/jpeg"), blobs.etag(crop, "crop", data)


def person_thumbnail(store: Store, person_id: str) -> tuple[bytes, str, str]:
    """The crop of the person's best-quality face."""
    person = store.get_person(person_id)
    face_id = person.get("thumbnail_face_id")
    if not face_id:
        best = bookkeeping.best_face_of(store, person["_id"])
        face_id = best["_id"] if best else ""
    return face_crop(store, face_id)


# -- changing -----------------------------------------------------------------------------

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
    bookkeeping.refuse_during_recluster(store)
    face = store.get_face(face_id)
    target = store.get_person(target_person_id)
    if target["_id"] == face["person_id"]:
        raise ValidationError("The face already belongs to this person",
                              details={"face_id": face["_id"], "person_id": target["_id"]})
    with bookkeeping.journal(store, "move", faces=[face["_id"]],
                             persons=[face["person_id"], target["_id"]]):
        corrections.forget_on_move(store, face["_id"], target["_id"])
        source_deleted = _reassign(store, face, target["_id"])
    return {"face_id": face["_id"], "from_person_id": face["person_id"],
            "to_person_id": target["_id"], "is_manual_assignment": True,
            "source_person_deleted": source_deleted}


def move_face_to_new(store: Store, face_id: str, name: t.Any = None) -> Doc:
    """Move a face into a new person (named, or "Person N")."""
    clean = clean_person_name(name, "new_person_name") if name is not None else None
    bookkeeping.refuse_during_recluster(store)
    face = store.get_face(face_id)
    person = bookkeeping.new_person_doc(store, name=clean)
    person["named_by_user"] = clean is not None
    # Named before it is written: a kill between the person and the face leaves an intent
    # whose repair deletes the empty person, never a "Person N" listed for good.
    with bookkeeping.journal(store, "move_to_new", faces=[face["_id"]],
                             persons=[face["person_id"], person["_id"]]):
        store.insert_persons([person])
        try:
            source_deleted = _reassign(store, face, person["_id"])
        except BaseException:
            bookkeeping.delete_if_empty(store, person["_id"])  # the face went away meanwhile
            raise
    return {"face_id": face["_id"], "old_person_id": face["person_id"],
            "new_person_id": person["_id"], "new_person_name": person["name"],
            "is_manual_assignment": True, "source_person_deleted": source_deleted}


def merge_persons(store: Store, target_id: str, source_ids: t.Any, *,
                  force: bool = False) -> Doc:
    """Move every face of the source persons into the target, then delete the sources.

    ``force`` merges persons marked as different people (409 otherwise).
    """
    if not isinstance(source_ids, list) or not source_ids or not all(
            isinstance(s, str) for s in source_ids):
        raise ValidationError("'source_person_ids' must be a non-empty list of ids",
                              details={"field": "source_person_ids"})
    bookkeeping.refuse_during_recluster(store)
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
    source_list = [s["_id"] for s in sources]
    overridden = corrections.check_merge(store, [target["_id"], *source_list], force=force)
    deleted = []
    with bookkeeping.journal(store, "merge", faces=[f["_id"] for f in moving],
                             persons=[target["_id"], *(s["_id"] for s in sources)]):
        corrections.carry_over(store, target["_id"], source_list, overridden)
        for face in moving:
            _reassign(store, face, target["_id"], delete_empty=False, via="merge")
        for source in sources:
            if bookkeeping.delete_if_empty(store, source["_id"]):
                deleted.append(source["_id"])
    person = store.get_person(target["_id"])
    return {"person_id": target["_id"], "name": person["name"], "faces_moved": len(moving),
            "persons_deleted": deleted, "face_count": person["face_count"]}


def _reassign(store: Store, face: Doc, person_id: str, *, delete_empty: bool = True,
              via: str = "move") -> bool:
    """Point ``face`` at ``person_id`` (manual, ``via`` a move or a merge), keep counters;
    True if the source emptied.

    The target person is locked while its photos are checked and the face moves, so two
    concurrent moves cannot both bring a face of one photo into it.
    """
    with bookkeeping.person_lock(store, person_id):
        for other in store.faces_of_image(face["image_id"]):
            if other["_id"] != face["_id"] and other["person_id"] == person_id:
                raise ConflictError(
                    f"Image {face['image_id']} already has a face of this person "
                    f"({other['_id']}); two faces of one photo cannot be one person",
                    details={"image_id": face["image_id"], "face_id": other["_id"]})
        before = store.reassign_face(face["_id"], person_id, via=via)
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
    store.offer_thumbnail(person_id, face["_id"], bookkeeping.quality_of(before))
    return bookkeeping.settle_person(store, source_id, left_face_id=face["_id"],
                                     delete_empty=delete_empty)


def confirm_face(store: Store, face_id: str) -> Doc:
    """Confirm a face's person by hand: an automatic assignment becomes manual, which
    re-clustering keeps; a manual one is left as it is. Returns the face, and ``was_manual``."""
    bookkeeping.refuse_during_recluster(store)
    face = store.get_face(face_id)
    was_manual = bool(face.get("is_manual_assignment"))
    if not was_manual:
        # The flag and the counter are two writes: a kill between them leaves the intent,
        # whose repair recounts the person's manual faces.
        with bookkeeping.journal(store, "confirm", faces=[face["_id"]],
                                 persons=[face["person_id"]]):
            before = store.confirm_face(face["_id"])
            if before is None:
                raise DocumentNotFoundError.for_id("Face", face["_id"])
            # Counted from what the face really was: a move may have made it manual meanwhile.
            was_manual = bool(before.get("is_manual_assignment"))
            if not was_manual:
                store.adjust_person_counts(before["person_id"], 0, 0, manual=1)
    return {**get_face(store, face["_id"]), "was_manual": was_manual}
