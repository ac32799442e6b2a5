"""Images: listing, detail, files, filing into albums and sections, deletion.

Uploading lives in :mod:`services.upload`.
"""

from __future__ import annotations

import os
import typing as t
from collections.abc import Iterable
from datetime import datetime

from errors import DocumentNotFoundError
from errors import ValidationError
from services import blobs
from services import bookkeeping
from services import catalog
from services import imaging
from services import people
from services import processes
from services import storage
from services import text
from services.catalog import ref
from services.storage import Store

Doc = dict[str, t.Any]


# -- filing -------------------------------------------------------------------------------

def resolve_filing(store: Store, album_id: str | None, section_id: str | None
                   ) -> tuple[str, str]:
    """Check album and section exist and agree; a section inside an album implies that album.

    Returns the ("" for none) album and section ids to store.
    """
    album = store.get_album(album_id)["_id"] if album_id else ""
    section = ""
    if section_id:
        doc = store.get_section(section_id)
        section = doc["_id"]
        owner = doc.get("album_id", "")
        if owner and album and owner != album:
            raise ValidationError(
                f"Section {section} belongs to album {owner}, not {album}",
                details={"section_id": section, "album_id": album, "section_album_id": owner})
        album = album or owner
    return album, section


def clean_filename(filename: str) -> str:
    """The name to keep for a file: its last path part without control characters (cut out,
    not refused: a browser sends whatever the user's file system allows), at most 255
    characters, ``upload`` when nothing is left."""
    name = text.strip_controls(filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or "upload"


# -- reading ------------------------------------------------------------------------------

def image_summary(image: Doc, faces: list[Doc]) -> Doc:
    """What lists show of an image: metadata, urls and face boxes, never the pixels."""
    return {
        "_id": image["_id"], "filename": image["filename"], "mime_type": image["mime_type"],
        "width": image["width"], "height": image["height"], "size_bytes": image["size_bytes"],
        "face_count": image["face_count"], "album_id": ref(image["album_id"]),
        "section_id": ref(image["section_id"]), "taken_at": image.get("taken_at"),
        "created_at": image["created_at"], "updated_at": image["updated_at"],
        **catalog.image_urls(image["_id"]),
        "faces": [{"face_id": f["_id"], "face_location": f["face_location"],
                   "person_id": f["person_id"],
                   "is_manual_assignment": f.get("is_manual_assignment", False)}
                  for f in faces],
    }


def list_images(store: Store, *, album_id: str | None = None, section_id: str | None = None,
                person_id: str | None = None, date_from: datetime | None = None,
                date_to: datetime | None = None, limit: int = 50, offset: int = 0,
                person_ids: Iterable[str] = (), only: bool = False,
                exclude_person_ids: Iterable[str] = ()) -> Doc:
    """Ready images, newest upload first, filtered by album, section, persons and photo date.

    ``person_id`` and ``person_ids``: images showing every one of them, and with ``only`` no
    other person (``only`` alone: images showing nobody); ``exclude_person_ids``: images
    showing none of them.

    :raise DocumentNotFoundError: an album, section or person filtered on does not exist.
    """
    query: Doc = {}
    if album_id:
        query["album_id"] = store.get_album(album_id)["_id"]
    if section_id:
        query["section_id"] = store.get_section(section_id)["_id"]
    if date_from or date_to:
        # An inverted range is not an error: like any range, it holds what falls in it (nothing).
        # Both bounds always: the embedded store narrows by an index only on a closed range.
        query["photo_date"] = {"$gte": date_from or datetime(1, 1, 1),
                               "$lte": date_to or datetime(9999, 12, 31)}
    wanted = _persons(store, [person_id or "", *person_ids])
    excluded = _persons(store, exclude_person_ids)
    if only and not wanted:
        # Exactly no one: the photos without a face (which show no excluded person either).
        page, total = store.images_page({**query, "face_count": 0}, limit, offset)
    elif wanted:
        page, total = _images_of_persons(store, wanted, query, limit, offset, only=only,
                                         excluded=excluded)
    elif excluded:
        # Every image but those showing an excluded person: a filter on ids, as no index
        # answers "none of these persons".
        shown = sorted(_image_ids_of(store, excluded))
        page, total = store.images_page({**query, "_id": {"$nin": shown}}, limit, offset)
    elif query:
        page, total = store.images_page(query, limit, offset)
    else:
        page, total = store.images_newest(limit, offset)
    faces = store.faces_of_images([image["_id"] for image in page])
    items = [image_summary(image, faces[image["_id"]]) for image in page]
    return {"images": items, "total": total, "limit": limit, "offset": offset}


def _persons(store: Store, person_ids: Iterable[str]) -> list[str]:
    """The ids of the persons named (empty ones skipped: `?person_id=` filters nothing), each
    checked to exist, in order, without repeats."""
    return list(dict.fromkeys(store.get_person(p)["_id"] for p in person_ids if p))


def _image_ids_of(store: Store, person_ids: Iterable[str]) -> set[str]:
    return {f["image_id"] for p in person_ids
            for f in store.faces_of_person(p, projection={"image_id": 1})}


def _images_of_persons(store: Store, person_ids: list[str], query: Doc, limit: int,
                       offset: int, *, only: bool = False, excluded: Iterable[str] = ()
                       ) -> tuple[list[Doc], int]:
    # The first person's images come newest first; the others' narrow them down.
    faces = store.faces_of_person(person_ids[0], projection={"image_id": 1, "image_seq": 1})
    image_ids = list(dict.fromkeys(f["image_id"] for f in faces))
    if len(person_ids) > 1:
        # An image holding every one of them holds a face of each: intersect their images.
        for other in person_ids[1:]:
            theirs = _image_ids_of(store, [other])
            image_ids = [i for i in image_ids if i in theirs]
    if excluded:
        shown = _image_ids_of(store, excluded)
        image_ids = [i for i in image_ids if i not in shown]
    if only and image_ids:
        # Exactly them: no face of anyone else (each of them has one face per photo at most).
        everyone = set(person_ids)
        image_ids = [i for i, own in store.faces_of_images(image_ids).items()
                     if {f["person_id"] for f in own} <= everyone]
    if not query:
        chosen = image_ids[offset: offset + limit]
        found = [store.find_image(i) for i in chosen]
        return [i for i in found if i and i.get("status") == "ready"], len(image_ids)
    matching = [i for i in (store.find_image(i) for i in image_ids)
                if i and i.get("status") == "ready" and _matches(i, query)]
    return matching[offset: offset + limit], len(matching)


def _matches(image: Doc, query: Doc) -> bool:
    for field, wanted in query.items():
        value = image.get(field)
        if isinstance(wanted, dict):
            if "$gte" in wanted and not value >= wanted["$gte"]:
                return False
            if "$lte" in wanted and not value <= wanted["$lte"]:
                return False
        elif value != wanted:
            return False
    return True


def get_image(store: Store, image_id: str) -> Doc:
    """One image with its faces (box, person, manual flag), persons, album, section, EXIF."""
    image = store.get_image(image_id)
    faces = store.faces_of_image(image["_id"])
    names = people.person_names(store, {f["person_id"] for f in faces})
    detail = image_summary(image, faces)
    for face, summary in zip(faces, detail["faces"], strict=True):
        summary.update(person_name=names.get(face["person_id"]),
                       quality_score=face.get("quality_score"),
                       face_url=f"/faces/{face['_id']}")
    detail["persons"] = [{"person_id": pid, "name": names.get(pid)}
                         for pid in dict.fromkeys(f["person_id"] for f in faces)]
    detail["album"] = _named(store.find_album(image["album_id"])) if image["album_id"] else None
    detail["section"] = (_named(store.find_section(image["section_id"]))
                         if image["section_id"] else None)
    detail["exif"] = image.get("exif", {})
    detail["sha256"] = image.get("sha256")
    detail["suppressed_boxes"] = image.get("suppressed_boxes", [])
    return detail


def _named(doc: Doc | None) -> Doc | None:
    return {"_id": doc["_id"], "name": doc["name"]} if doc else None


#: Stored files at least this large are sent from disk in pieces, never read whole.
STREAM_FROM_BYTES = 4 * 2**20


def image_file(store: Store, image_id: str, *, size: int | None = None,
               display_max: int = 0) -> ImageFile:
    """The stored photo as uploaded (byte for byte unless originals are off), or with
    ``size`` a JPEG fitted into ``size`` pixels, made from the display copy (fitted into
    ``display_max``) when that is large enough."""
    store.get_image(image_id)
    doc = store.get_image_blob(image_id)
    if size is None:
        path = store.blob_path(doc, "original")
        if path and os.path.getsize(path) < STREAM_FROM_BYTES:
            path = None
        data = b"" if path else store.read_blob(doc, "original")
        return ImageFile(data, doc.get("mime_type", "image/jpeg"),
                         blobs.etag(doc, "original", data), path)
    part = "display" if size <= display_max and (
        doc.get("display_sha256") or "display_image_base64" in doc) else "original"
    data = store.read_blob(doc, part)
    return ImageFile(imaging.make_thumbnail(data, size), "image/jpeg",
                     f"{blobs.etag(doc, part, data)}-{size}", None)


def image_thumbnail(store: Store, image_id: str, size: int, *, display_max: int = 0
                    ) -> ImageFile:
    return image_file(store, image_id, size=size, display_max=display_max)


class ImageFile(t.NamedTuple):
    """Bytes to send, or a file holding them (``path``, when the files store has them)."""

    data: bytes
    mime_type: str
    etag: str
    path: str | None


# -- changing -----------------------------------------------------------------------------

def update_image(store: Store, image_id: str, changes: Doc) -> Doc:
    """File an image into albums and sections (null unassigns) or rename its file.

    A section chosen alone brings its album; an album chosen alone drops a section that
    belongs to another album.
    """
    catalog.check_fields(changes, {"album_id", "section_id", "filename"})
    image = store.get_image(image_id)
    fields: Doc = {"updated_at": storage.now()}
    if "album_id" in changes or "section_id" in changes:
        fields["album_id"], fields["section_id"] = _refile(store, image, changes)
    if "filename" in changes:
        if not isinstance(changes["filename"], str) or not changes["filename"].strip():
            raise ValidationError("'filename' must be a non-empty string",
                                  details={"field": "filename"})
        # Typed by the user this time: refused, where an upload's name is cleaned.
        fields["filename"] = clean_filename(text.check_text(changes["filename"], "filename"))
    store.set_image_fields(image["_id"], fields)
    return get_image(store, image["_id"])


def _refile(store: Store, image: Doc, changes: Doc) -> tuple[str, str]:
    for field in ("album_id", "section_id"):
        value = changes.get(field)
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"'{field}' must be a string or null", details={"field": field})
    album_id = changes["album_id"] if "album_id" in changes else image["album_id"]
    section_id = changes["section_id"] if "section_id" in changes else image["section_id"]
    if "album_id" not in changes and section_id:
        album_id = store.get_section(section_id).get("album_id") or album_id
    if "section_id" not in changes and section_id:
        owner = store.get_section(section_id).get("album_id", "")
        if owner and owner != (album_id or ""):
            section_id = ""
    return resolve_filing(store, album_id or None, section_id or None)


def delete_image(store: Store, image_id: str) -> Doc:
    """Delete an image with its faces; persons left without faces are deleted too."""
    bookkeeping.refuse_during_recluster(store)
    image_id = store.get_image(image_id)["_id"]
    faces = store.faces_of_image(image_id)
    # Repair finishes a delete whose process is gone, and recounts these persons.
    with bookkeeping.journal(store, "delete_image", images=[image_id],
                             faces=[f["_id"] for f in faces],
                             persons=[f["person_id"] for f in faces]):
        before = store.start_image_delete(image_id, processes.claimant())
        if before is None or before.get("status") != "ready":
            # Gone, still uploading, or another request is deleting it right now.
            raise DocumentNotFoundError.for_id("Image", image_id)
        return bookkeeping.remove_image(store, image_id)
