"""The people data as one portable JSON document: written by :func:`export_document`, read
back by :func:`read_document` (and applied by :mod:`services.people_import`).

The schema (``docs/export.md``) is versioned: ``{"format": "face-gallery-export",
"version": 1, "exported_at", "persons", "albums", "sections", "images", "faces",
"rejections", "not_same"}``. Face ids differ from one gallery to the next, so a face is named
by its photo's sha256 and its box ``{top, right, bottom, left}`` in that photo's stored
pixels (``images[].width``/``height``); persons, albums and sections keep their ids.
"""

from __future__ import annotations

import base64
import json
import re
import typing as t
from collections.abc import Iterator
from datetime import date

from errors import ValidationError
from services import bookkeeping
from services import catalog
from services import people
from services import storage
from services.storage import Store

Doc = dict[str, t.Any]

FORMAT = "face-gallery-export"
VERSION = 1
LISTS = ("persons", "albums", "sections", "images", "faces", "rejections", "not_same")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BOX_SIDES = ("top", "right", "bottom", "left")
_FACE_FIELDS = {"image_id": 1, "face_location": 1, "person_id": 1, "assigned_by": 1,
                "assigned_via": 1, "assigned_run": 1, "is_manual_assignment": 1,
                "quality_score": 1, "embedding": 1}
_IMAGE_FIELDS = {"sha256": 1, "filename": 1, "width": 1, "height": 1, "album_id": 1,
                 "section_id": 1}


# -- writing ------------------------------------------------------------------------------

def export_document(store: Store, *, exported_at: str) -> Iterator[str]:
    """The document in pieces, one entry at a time, so nothing holds the whole of it.

    Read as it streams, not from one snapshot: a change made meanwhile may show in one part
    and not another (export a quiet gallery for an exact copy)."""
    yield json.dumps({"format": FORMAT, "version": VERSION, "exported_at": exported_at})[:-1]
    yield from _list("persons", (_person_entry(store, p) for p in store.iter_persons()))
    yield from _list("albums", ({"id": a["_id"], "name": a["name"],
                                 "description": a.get("description", "")}
                                for a in store.list_albums()))
    yield from _list("sections", ({"id": s["_id"], "name": s["name"],
                                   "description": s.get("description", ""),
                                   "album_id": s.get("album_id") or None}
                                  for s in store.list_sections()))
    # sha256 by image id: faces and corrections name photos by their bytes.
    hashes: dict[str, str] = {}
    yield from _list("images", (_image_entry(i, hashes)
                                for i in store.iter_ready_images(_IMAGE_FIELDS)))
    boxes: dict[str, Doc] = {}
    yield from _list("faces", (_face_entry(f, hashes, boxes)
                               for f in store.iter_faces({}, _FACE_FIELDS)
                               if f["image_id"] in hashes))
    yield from _list("rejections", ({"face": boxes[face_id], "person_id": person_id}
                                    for face_id, person_id in store.all_rejections()
                                    if face_id in boxes))
    yield from _list("not_same", ({"person_id": a, "other_person_id": b}
                                  for a, b in store.all_not_same()))
    yield "}"


def _list(key: str, entries: t.Iterable[Doc]) -> Iterator[str]:
    yield f', "{key}": ['
    separator = ""
    for entry in entries:
        yield separator + json.dumps(entry, ensure_ascii=False)
        separator = ", "
    yield "]"


def _person_entry(store: Store, person: Doc) -> Doc:
    return {"id": person["_id"], "name": person["name"],
            "named_by_user": bool(person.get("named_by_user", False)),
            "hidden": bool(person.get("hidden", False)),
            "favorite": bool(person.get("favorite", False)),
            "birth_date": person.get("birth_date") or None,
            "cover_face": _cover_ref(store, person), "face_count": person.get("face_count", 0)}


def _cover_ref(store: Store, person: Doc) -> Doc | None:
    """The face chosen by hand as the person's thumbnail, by photo and box (covers are few:
    each is looked up on its own)."""
    cover = bookkeeping.cover_of(person)
    face = next(iter(store.faces_with_ids([cover])), None) if cover else None
    image = store.find_image(face["image_id"]) if face else None
    if face is None or image is None:
        return None
    location = store.get_face(cover)["face_location"]
    return {"image_sha256": image["sha256"],
            "box": {side: int(location[side]) for side in _BOX_SIDES}}


def _image_entry(image: Doc, hashes: dict[str, str]) -> Doc:
    hashes[image["_id"]] = image["sha256"]
    return {"sha256": image["sha256"], "filename": image.get("filename", ""),
            "width": image.get("width"), "height": image.get("height"),
            "album_id": image.get("album_id") or None,
            "section_id": image.get("section_id") or None}


def _face_entry(face: Doc, hashes: dict[str, str], boxes: dict[str, Doc]) -> Doc:
    ref = {"image_sha256": hashes[face["image_id"]],
           "box": {side: int(face["face_location"][side]) for side in _BOX_SIDES}}
    boxes[face["_id"]] = ref
    entry = {**ref, "person_id": face["person_id"], **people.provenance(face),
             "quality_score": face.get("quality_score"),
             "embedding": base64.b64encode(bytes(face["embedding"])).decode("ascii")}
    return entry


# -- reading ------------------------------------------------------------------------------

def read_document(document: t.Any) -> Doc:
    """Check a parsed document and return it normalised (every list present, ids lowered).

    Everything is checked before anything is written, so a bad document changes nothing.
    :raise ValidationError: not this format or version, or an entry of the wrong shape; the
        field is named as ``faces[3].box.top`` (400).
    """
    if not isinstance(document, dict):
        raise _bad("", "the document must be a JSON object")
    if document.get("format") != FORMAT:
        raise _bad("format", f"'format' must be {FORMAT!r}")
    version = _whole(document.get("version"))
    if version != VERSION:
        raise _bad("version", f"'version' {version!r} is not supported (this server reads "
                              f"version {VERSION})")
    for key in LISTS:
        if not isinstance(document.get(key, []), list):
            raise _bad(key, f"'{key}' must be a list")
    read: Doc = {"format": FORMAT, "version": VERSION}
    for key, reader in (("persons", _read_person), ("albums", _read_album),
                        ("sections", _read_section), ("images", _read_image),
                        ("faces", _read_face), ("rejections", _read_rejection),
                        ("not_same", _read_not_same)):
        read[key] = [reader(_object(entry, f"{key}[{i}]"), f"{key}[{i}]")
                     for i, entry in enumerate(document.get(key, []))]
    return read


def _bad(field: str, message: str) -> ValidationError:
    return ValidationError(f"Not an export document: {message}", details={"field": field})


def _object(value: t.Any, where: str) -> Doc:
    if not isinstance(value, dict):
        raise _bad(where, f"{where} must be an object")
    return value


def _id(entry: Doc, key: str, where: str, *, optional: bool = False) -> str:
    value = entry.get(key)
    if optional and value in (None, ""):
        return ""
    try:
        return storage.check_id(value, f"{where}.{key}")
    except ValidationError:
        raise _bad(f"{where}.{key}", f"{where}.{key} must be a 24-hex id") from None


def _flag(entry: Doc, key: str, where: str, default: bool) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        raise _bad(f"{where}.{key}", f"{where}.{key} must be true or false")
    return value


def _text(entry: Doc, key: str, where: str, clean: t.Callable[..., str]) -> str:
    try:
        return clean(entry.get(key))
    except ValidationError as err:
        raise _bad(f"{where}.{key}", f"{where}.{key}: {err.message}") from None


def _sha(entry: Doc, key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not _SHA256.fullmatch(value.lower()):
        raise _bad(f"{where}.{key}", f"{where}.{key} must be a sha256 (64 hex digits)")
    return value.lower()


def _box(entry: Doc, where: str) -> Doc:
    box = _object(entry.get("box"), f"{where}.box")
    read = {}
    for side in _BOX_SIDES:
        value = _whole(box.get(side))
        if value is None or not 0 <= value <= 10**6:
            raise _bad(f"{where}.box.{side}", f"{where}.box.{side} must be a whole number of "
                                              "pixels, 0 or more")
        read[side] = value
    return read


def _whole(value: t.Any) -> int | None:
    """A JSON integer as an int (2.0 is one, as JSON Schema says); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def _face_ref(entry: Doc, where: str) -> Doc:
    return {"image_sha256": _sha(entry, "image_sha256", where), "box": _box(entry, where)}


def _read_person(entry: Doc, where: str) -> Doc:
    birth = entry.get("birth_date")
    if birth is not None:
        try:
            birth = date.fromisoformat(birth).isoformat()
        except (TypeError, ValueError):
            raise _bad(f"{where}.birth_date", f"{where}.birth_date must be an ISO date or "
                                              "null") from None
    cover = entry.get("cover_face")
    return {"id": _id(entry, "id", where),
            "name": _text(entry, "name", where, people.clean_person_name),
            "named_by_user": _flag(entry, "named_by_user", where, True),
            "hidden": _flag(entry, "hidden", where, False),
            "favorite": _flag(entry, "favorite", where, False), "birth_date": birth,
            "cover_face": None if cover is None else _face_ref(
                _object(cover, f"{where}.cover_face"), f"{where}.cover_face")}


def _read_album(entry: Doc, where: str) -> Doc:
    return {"id": _id(entry, "id", where), "name": _text(entry, "name", where,
                                                         catalog.clean_name),
            "description": _text(entry, "description", where, catalog.clean_description)}


def _read_section(entry: Doc, where: str) -> Doc:
    return {**_read_album(entry, where), "album_id": _id(entry, "album_id", where,
                                                         optional=True)}


def _read_image(entry: Doc, where: str) -> Doc:
    size = []
    for key in ("width", "height"):
        value = entry.get(key)
        if value is not None:
            value = _whole(value)
            if value is None or value < 1:
                raise _bad(f"{where}.{key}", f"{where}.{key} must be a positive whole number")
        size.append(value)
    filename = entry.get("filename", "")
    if not isinstance(filename, str):
        raise _bad(f"{where}.filename", f"{where}.filename must be a string")
    return {"sha256": _sha(entry, "sha256", where), "filename": filename,
            "width": size[0], "height": size[1],
            "album_id": _id(entry, "album_id", where, optional=True),
            "section_id": _id(entry, "section_id", where, optional=True)}


def _read_face(entry: Doc, where: str) -> Doc:
    # Provenance and embedding are kept for the record; an import assigns by hand.
    return {**_face_ref(entry, where), "person_id": _id(entry, "person_id", where)}


def _read_rejection(entry: Doc, where: str) -> Doc:
    return {"face": _face_ref(_object(entry.get("face"), f"{where}.face"), f"{where}.face"),
            "person_id": _id(entry, "person_id", where)}


def _read_not_same(entry: Doc, where: str) -> Doc:
    return {"person_id": _id(entry, "person_id", where),
            "other_person_id": _id(entry, "other_person_id", where)}
