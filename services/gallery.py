"""Images: upload (detect, encode, assign), listing, detail, filing and deletion.

Upload writes in an order that a crash or an error can only leave half done in ways that
are cleaned up (here on error, by :func:`people.repair` otherwise): the image's blob, then its
metadata marked ``pending``, then new persons, then face crops and faces, then the counters of
existing persons, and only then ``ready``. Lists show ready images only.
"""

from __future__ import annotations

import hashlib
import logging
import time
import typing as t
from datetime import datetime

from errors import ConflictError
from errors import DatabaseConnectionError
from errors import DocumentNotFoundError
from errors import GalleryError
from errors import ValidationError
from services import clustering
from services import images as imaging
from services import people
from services import storage
from services.context import Gallery
from services.storage import Store

log = logging.getLogger(__name__)

Doc = dict[str, t.Any]


def _ref(value: str) -> str | None:
    return value or None


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


# -- upload -------------------------------------------------------------------------------

def upload_image(gallery: Gallery, data: bytes, filename: str, *, album_id: str | None = None,
                 section_id: str | None = None) -> Doc:
    """Store a photo, find its faces and give each one a person.

    Uploading bytes already stored returns that image with ``duplicate: true``.
    :raise FileValidationError: the bytes are not a supported image.
    """
    started = time.perf_counter()
    store, settings = gallery.store, gallery.settings
    album, section = resolve_filing(store, album_id, section_id)
    sha256 = hashlib.sha256(data).hexdigest()
    existing = _existing_image(store, sha256)
    if existing is not None:
        return _duplicate_result(store, existing, started)

    decoded = imaging.decode_upload(data, allowed_formats=settings["ALLOWED_EXTENSIONS"],
                                    max_pixels=settings["IMAGE_MAX_PIXELS"])
    work, scale = imaging.resize_to_fit(decoded.rgb, settings["IMAGE_MAX_DIMENSION"])
    found = gallery.engine.analyse(work)
    if settings["IMAGE_COMPRESSION"]:
        stored, mime_type = imaging.encode_for_storage(decoded, work,
                                                       quality=settings["IMAGE_QUALITY"])
        box_scale = 1.0
        width, height = work.shape[1], work.shape[0]
    else:
        # The original bytes are kept: give boxes in its (upright) pixel grid.
        stored, mime_type = data, decoded.mime_type
        box_scale = 1.0 / scale
        width, height = decoded.width, decoded.height
    padding = settings["FACE_CROP_PADDING"]
    crops = [imaging.encode_jpeg(imaging.crop_box(work, face.box, padding),
                                 settings["IMAGE_QUALITY"]) for face in found]

    index = gallery.index
    embeddings, _, person_ids, _ = index.snapshot()
    choices = clustering.assign_faces(
        _stack([face.encoding for face in found]), embeddings, person_ids,
        tolerance=settings["FACE_RECOGNITION_TOLERANCE"])

    image_id = storage.new_id()
    holder = store.claim_hash(sha256, image_id)
    while holder is not None:
        existing = _existing_image(store, sha256)
        if existing is not None:
            return _duplicate_result(store, existing, started)
        holder = store.claim_hash(sha256, image_id)

    moment = storage.now()
    taken_at = decoded.exif.get("taken_at")
    image_doc: Doc = {
        "_id": image_id, "seq": store.next_seq("images"), "status": "pending",
        "filename": _clean_filename(filename), "mime_type": mime_type, "sha256": sha256,
        "size_bytes": len(stored), "original_size_bytes": len(data),
        "original_format": decoded.format, "width": width, "height": height,
        "exif": decoded.exif, "taken_at": taken_at,
        "photo_date": taken_at if isinstance(taken_at, datetime) else moment,
        "album_id": album, "section_id": section, "face_count": len(found),
        "created_at": moment, "updated_at": moment,
    }
    touched: list[str] = [p for p, _ in choices if p is not None]
    try:
        store.insert_image(image_doc, {
            "_id": image_id, "mime_type": mime_type,
            "original_image_base64": imaging.data_uri(stored, mime_type)})
        faces = _write_faces(store, image_doc, found, crops, choices, box_scale, touched)
        store.set_image_fields(image_id, {"status": "ready"})
    except BaseException:
        log.exception("upload of %s failed; removing what was written", filename)
        people.undo_upload(store, image_id, touched)
        store.release_hash(sha256, image_id)
        raise
    index.sync(store)
    return {
        "image_id": image_id, "filename": image_doc["filename"], "duplicate": False,
        "faces_detected": len(faces),
        "persons_created": sum(1 for face in faces if face["new_person"]),
        "faces": [{"face_id": f["face_id"], "location": f["location"],
                   "person_id": f["person_id"], "person_name": f["person_name"],
                   "new_person": f["new_person"], "quality_score": f["quality_score"]}
                  for f in faces],
        "width": width, "height": height, "album_id": _ref(album), "section_id": _ref(section),
        "processing_time": round(time.perf_counter() - started, 3),
    }


def upload_batch(gallery: Gallery, files: list[tuple[str, bytes]], *,
                 album_id: str | None = None, section_id: str | None = None) -> Doc:
    """Upload each file in turn; a file's error is reported with it, the rest go on."""
    started = time.perf_counter()
    resolve_filing(gallery.store, album_id, section_id)  # unknown ids fail before any work
    results = []
    for filename, data in files:
        try:
            result = upload_image(gallery, data, filename, album_id=album_id,
                                  section_id=section_id)
            results.append({"filename": filename, "success": True, **result})
        except DatabaseConnectionError:
            raise
        except GalleryError as err:
            results.append({"filename": filename, "success": False, "error": err.message,
                            "error_type": type(err).__name__, "code": err.code})
    succeeded = [r for r in results if r["success"]]
    return {
        "total_images": len(files), "successful_uploads": len(succeeded),
        "failed_uploads": len(results) - len(succeeded),
        "duplicates": sum(1 for r in succeeded if r["duplicate"]),
        "total_faces_detected": sum(r["faces_detected"] for r in succeeded if not r["duplicate"]),
        "persons_created": sum(r["persons_created"] for r in succeeded),
        "results": results, "processing_time": round(time.perf_counter() - started, 3),
    }


def _stack(vectors: list[t.Any]) -> t.Any:
    import numpy as np

    if not vectors:
        return np.empty((0, 128), dtype=np.float32)
    return np.stack(vectors).astype(np.float32)


def _clean_filename(filename: str) -> str:
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return "".join(ch for ch in name if ch.isprintable())[:255] or "upload"


def _existing_image(store: Store, sha256: str) -> Doc | None:
    """The ready image holding these bytes; clears a claim left by a failed upload."""
    holder = store.hash_holder(sha256)
    if holder is None:
        return None
    image = store.find_image(holder)
    if image is not None and image.get("status") == "ready":
        return image
    if image is None:
        store.release_hash(sha256, holder)
        return None
    raise ConflictError("The same photo is being uploaded right now; retry in a moment",
                        details={"image_id": holder})


def _duplicate_result(store: Store, image: Doc, started: float) -> Doc:
    faces = store.faces_of_image(image["_id"])
    names = people.person_names(store, {f["person_id"] for f in faces})
    return {
        "image_id": image["_id"], "filename": image["filename"], "duplicate": True,
        "faces_detected": len(faces), "persons_created": 0,
        "faces": [{"face_id": f["_id"], "location": f["face_location"],
                   "person_id": f["person_id"], "person_name": names.get(f["person_id"]),
                   "new_person": False, "quality_score": f.get("quality_score")}
                  for f in faces],
        "width": image["width"], "height": image["height"],
        "album_id": _ref(image["album_id"]), "section_id": _ref(image["section_id"]),
        "processing_time": round(time.perf_counter() - started, 3),
    }


def _write_faces(store: Store, image: Doc, found: list[t.Any], crops: list[bytes],
                 choices: list[tuple[str | None, float | None]], box_scale: float,
                 touched: list[str]) -> list[Doc]:
    """Write new persons, crops and faces, then count them on existing persons.

    ``touched`` receives every person id written to, so a failure can be cleaned up.
    """
    if not found:
        return []
    moment = image["created_at"]
    last_seq = store.next_seq("faces", len(found))
    face_docs, crop_docs, results = [], [], []
    new_persons: list[Doc] = []
    existing: list[tuple[str, float, str]] = []
    for i, (face, crop, (person_id, _distance)) in enumerate(
            zip(found, crops, choices, strict=True)):
        face_id = storage.new_id()
        new_person = person_id is None
        if new_person:
            person = people.new_person_doc(store, face_count=1, thumbnail_face_id=face_id,
                                           thumbnail_quality=face.quality)
            new_persons.append(person)
            person_id = person["_id"]
            touched.append(person_id)
        else:
            existing.append((person_id, face.quality, face_id))
        top, right, bottom, left = (round(v * box_scale) for v in face.box)
        location = {"top": top, "right": right, "bottom": bottom, "left": left}
        face_docs.append({
            "_id": face_id, "seq": last_seq - len(found) + 1 + i, "image_id": image["_id"],
            "image_seq": image["seq"], "person_id": person_id,
            "embedding": storage.embedding_to_bytes(face.encoding),
            "face_location": location, "quality_score": round(face.quality, 4),
            "detector_score": face.detector_score, "is_manual_assignment": False,
            "assigned_by": "auto", "cropped_face_filename": f"face_{face_id}.jpg",
            "created_at": moment, "updated_at": moment,
        })
        crop_docs.append({"_id": face_id, "mime_type": "image/jpeg",
                          "cropped_face_base64": imaging.data_uri(crop, "image/jpeg")})
        results.append({"face_id": face_id, "location": location, "person_id": person_id,
                        "new_person": new_person, "quality_score": round(face.quality, 4)})
    store.insert_persons(new_persons)
    store.insert_faces(face_docs, crop_docs)
    for person_id, quality, face_id in existing:
        store.adjust_person_counts(person_id, 1, 1)
        store.offer_thumbnail(person_id, face_id, quality)
    names = people.person_names(store, {r["person_id"] for r in results})
    for result in results:
        result["person_name"] = names.get(result["person_id"])
    return results


# -- reading ------------------------------------------------------------------------------

def image_urls(image_id: str) -> Doc:
    return {"file_url": f"/images/{image_id}/file",
            "thumbnail_url": f"/images/{image_id}/thumbnail"}


def image_summary(image: Doc, faces: list[Doc]) -> Doc:
    """What lists show of an image: metadata, urls and face boxes, never the pixels."""
    return {
        "_id": image["_id"], "filename": image["filename"], "mime_type": image["mime_type"],
        "width": image["width"], "height": image["height"], "size_bytes": image["size_bytes"],
        "face_count": image["face_count"], "album_id": _ref(image["album_id"]),
        "section_id": _ref(image["section_id"]), "taken_at": image.get("taken_at"),
        "created_at": image["created_at"], "updated_at": image["updated_at"],
        **image_urls(image["_id"]),
        "faces": [{"face_id": f["_id"], "face_location": f["face_location"],
                   "person_id": f["person_id"],
                   "is_manual_assignment": f.get("is_manual_assignment", False)}
                  for f in faces],
    }


def list_images(store: Store, *, album_id: str | None = None, section_id: str | None = None,
                person_id: str | None = None, date_from: datetime | None = None,
                date_to: datetime | None = None, limit: int = 50, offset: int = 0) -> Doc:
    """Ready images, newest upload first, filtered by album, section, person and photo date."""
    query: Doc = {}
    if album_id:
        query["album_id"] = store.get_album(album_id)["_id"]
    if section_id:
        query["section_id"] = store.get_section(section_id)["_id"]
    if date_from or date_to:
        if date_from and date_to and date_from > date_to:
            raise ValidationError("'date_from' must not be after 'date_to'")
        bounds: Doc = {}
        if date_from:
            bounds["$gte"] = date_from
        if date_to:
            bounds["$lte"] = date_to
        query["photo_date"] = bounds
    if person_id:
        page, total = _images_of_person(store, store.get_person(person_id)["_id"], query,
                                        limit, offset)
    elif query:
        page, total = store.images_page(query, limit, offset)
    else:
        page, total = store.images_newest(limit, offset)
    faces = store.faces_of_images([image["_id"] for image in page])
    items = [image_summary(image, faces[image["_id"]]) for image in page]
    return {"images": items, "total": total, "limit": limit, "offset": offset}


def _images_of_person(store: Store, person_id: str, query: Doc, limit: int, offset: int
                      ) -> tuple[list[Doc], int]:
    faces = store.faces_of_person(person_id, projection={"image_id": 1, "image_seq": 1})
    image_ids = list(dict.fromkeys(f["image_id"] for f in faces))
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
    return detail


def _named(doc: Doc | None) -> Doc | None:
    return {"_id": doc["_id"], "name": doc["name"]} if doc else None


def image_file(store: Store, image_id: str) -> tuple[bytes, str, str]:
    """The stored image: (bytes, mime type, etag)."""
    store.get_image(image_id)
    blob = store.get_image_blob(image_id)
    data, mime_type = imaging.parse_data_uri(blob["original_image_base64"])
    return data, mime_type, hashlib.sha256(data).hexdigest()[:32]


def image_thumbnail(store: Store, image_id: str, size: int) -> tuple[bytes, str, str]:
    data, _, etag = image_file(store, image_id)
    return imaging.make_thumbnail(data, size), "image/jpeg", f"{etag}-{size}"


# -- changing -----------------------------------------------------------------------------

def update_image(store: Store, image_id: str, changes: Doc) -> Doc:
    """Move an image between albums and sections; null unassigns."""
    allowed = {"album_id", "section_id", "filename"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationError(f"Unknown field(s): {', '.join(unknown)}",
                              details={"allowed": sorted(allowed)})
    if not changes:
        raise ValidationError("Nothing to update: send album_id, section_id or filename")
    image = store.get_image(image_id)
    for field in ("album_id", "section_id"):
        value = changes.get(field)
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"'{field}' must be a string or null", details={"field": field})
    album_id = changes["album_id"] if "album_id" in changes else image["album_id"]
    section_id = changes["section_id"] if "section_id" in changes else image["section_id"]
    if "album_id" not in changes and section_id and "section_id" in changes:
        # Choosing only a section files the image in that section's album, if it has one.
        album_id = store.get_section(section_id).get("album_id") or album_id
    album, section = resolve_filing(store, album_id or None, section_id or None)
    fields: Doc = {"album_id": album, "section_id": section, "updated_at": storage.now()}
    if "filename" in changes:
        if not isinstance(changes["filename"], str) or not changes["filename"].strip():
            raise ValidationError("'filename' must be a non-empty string")
        fields["filename"] = _clean_filename(changes["filename"])
    store.set_image_fields(image["_id"], fields)
    return get_image(store, image["_id"])


def delete_image(store: Store, image_id: str) -> Doc:
    """Delete an image with its faces; persons left without faces are deleted too."""
    image = store.get_image(image_id, ready_only=False)
    if image.get("status") == "pending":
        raise DocumentNotFoundError.for_id("Image", image_id)
    return people.remove_image(store, image["_id"])
