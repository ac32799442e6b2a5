"""Albums, sections, statistics and reset: the organising side of the gallery."""

from __future__ import annotations

import time
import typing as t

from errors import ConflictError
from errors import ValidationError
from services import processes
from services import storage
from services import text
from services.storage import Store

MAX_NAME = 200
MAX_DESCRIPTION = 2000

#: How long a reset waits for uploads being written to finish (their writes take well under a
#: second) before it gives up with 409.
RESET_WAIT_SECONDS = 10.0
#: A reset mark older than this was left by a killed reset: uploads go on without it.
RESET_TTL_SECONDS = 120.0
#: An upload lease older than this was left by a killed upload: a reset does not wait for it.
LEASE_TTL_SECONDS = 60.0

Doc = dict[str, t.Any]


def clean_name(name: t.Any, *, max_length: int = MAX_NAME, field: str = "name") -> str:
    """Trim a display name and check it: 1..max_length characters, no control characters."""
    if not isinstance(name, str):
        raise ValidationError(f"'{field}' is required and must be a string",
                              details={"field": field})
    name = name.strip()
    if not 0 < len(name) <= max_length:
        raise ValidationError(f"'{field}' must be 1-{max_length} characters after trimming",
                              details={"field": field, "length": len(name)})
    return text.check_text(name, field)


def clean_description(description: t.Any) -> str:
    """Trim a description and check it: at most MAX_DESCRIPTION characters, several lines
    allowed, no other control characters."""
    if description is None:
        return ""
    if not isinstance(description, str):
        raise ValidationError("'description' must be a string", details={"field": "description"})
    description = description.strip()
    if len(description) > MAX_DESCRIPTION:
        raise ValidationError(f"'description' must be at most {MAX_DESCRIPTION} characters",
                              details={"field": "description", "length": len(description)})
    return text.check_text(description, "description", multiline=True)


def ref(value: str) -> str | None:
    """A stored reference as the API shows it: unassigned is stored as "" (null is not an
    indexable key on the embedded store) and shown as None."""
    return value or None


def image_urls(image_id: str) -> Doc:
    """Where a client fetches an image's pixels: lists and details never carry them."""
    return {"file_url": f"/images/{image_id}/file",
            "thumbnail_url": f"/images/{image_id}/thumbnail"}


# -- albums -------------------------------------------------------------------------------

def album_view(store: Store, album: Doc) -> Doc:
    return {
        "_id": album["_id"],
        "name": album["name"],
        "description": album.get("description", ""),
        "image_count": store.count_images_in("album_id", album["_id"]),
        "section_count": store.count("sections", {"album_id": album["_id"]}),
        "created_at": album["created_at"],
        "updated_at": album["updated_at"],
    }


def create_album(store: Store, name: t.Any, description: t.Any = None) -> Doc:
    """Create an album; returns it with ``album_id``."""
    moment = storage.now()
    album = {"_id": storage.new_id(), "name": clean_name(name),
             "description": clean_description(description),
             "created_at": moment, "updated_at": moment}
    store.insert_album(album)
    return {"album_id": album["_id"], **album_view(store, album)}


def list_albums(store: Store) -> Doc:
    albums = [album_view(store, a) for a in store.list_albums()]
    return {"albums": albums, "total": len(albums)}


def get_album(store: Store, album_id: str) -> Doc:
    album = album_view(store, store.get_album(album_id))
    album["sections"] = [section_view(store, s) for s in store.list_sections(album["_id"])]
    return album


def update_album(store: Store, album_id: str, changes: Doc) -> Doc:
    """Change name and/or description; unknown fields are refused."""
    fields = _editable_fields(changes, {"name", "description"})
    return album_view(store, store.update_album(album_id, fields))


def delete_album(store: Store, album_id: str) -> Doc:
    """Delete an album; its images and sections stay, unassigned from it."""
    album_id = store.get_album(album_id)["_id"]
    sections = [s["_id"] for s in store.list_sections(album_id)]
    unassigned = store.delete_album(album_id)
    return {"deleted_album_id": album_id, "images_unassigned": unassigned,
            "sections_detached": len(sections)}


# -- sections -----------------------------------------------------------------------------

def section_view(store: Store, section: Doc) -> Doc:
    return {
        "_id": section["_id"],
        "name": section["name"],
        "description": section.get("description", ""),
        "album_id": ref(section.get("album_id", "")),
        "image_count": store.count_images_in("section_id", section["_id"]),
        "created_at": section["created_at"],
        "updated_at": section["updated_at"],
    }


def _album_ref(store: Store, album_id: t.Any) -> str:
    if album_id is None or album_id == "":
        return ""
    if not isinstance(album_id, str):
        raise ValidationError("'album_id' must be a string or null", details={"field": "album_id"})
    return store.get_album(album_id)["_id"]


def create_section(store: Store, name: t.Any, description: t.Any = None,
                   album_id: t.Any = None) -> Doc:
    """Create a section, standalone or inside an album (which must exist)."""
    moment = storage.now()
    section = {"_id": storage.new_id(), "name": clean_name(name),
               "description": clean_description(description),
               "album_id": _album_ref(store, album_id),
               "created_at": moment, "updated_at": moment}
    store.insert_section(section)
    return {"section_id": section["_id"], **section_view(store, section)}


def list_sections(store: Store, album_id: str | None = None) -> Doc:
    if album_id is not None:
        album_id = store.get_album(album_id)["_id"]
    sections = [section_view(store, s) for s in store.list_sections(album_id)]
    return {"sections": sections, "total": len(sections)}


def get_section(store: Store, section_id: str) -> Doc:
    return section_view(store, store.get_section(section_id))


def update_section(store: Store, section_id: str, changes: Doc) -> Doc:
    """Change name, description or album; a section moved to another album takes its
    images along (they stay in the section)."""
    fields = _editable_fields(changes, {"name", "description", "album_id"})
    if "album_id" in fields:
        fields["album_id"] = _album_ref(store, fields["album_id"])
    section = store.update_section(section_id, fields)
    if fields.get("album_id"):
        store.refile_section_images(section["_id"], fields["album_id"])
    return section_view(store, section)


def delete_section(store: Store, section_id: str) -> Doc:
    """Delete a section; its images stay, unassigned from it."""
    section_id = store.get_section(section_id)["_id"]
    return {"deleted_section_id": section_id,
            "images_unassigned": store.delete_section(section_id)}


def check_fields(changes: Doc, allowed: set[str]) -> None:
    """400 for an empty update or a field that cannot be changed."""
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationError(f"Unknown field(s): {', '.join(unknown)}",
                              details={"allowed": sorted(allowed)})
    if not changes:
        raise ValidationError(f"Nothing to update: send one of {', '.join(sorted(allowed))}")


def _editable_fields(changes: Doc, allowed: set[str]) -> Doc:
    check_fields(changes, allowed)
    fields: Doc = {}
    if "name" in changes:
        fields["name"] = clean_name(changes["name"])
    if "description" in changes:
        fields["description"] = clean_description(changes["description"])
    if "album_id" in changes:
        fields["album_id"] = changes["album_id"]
    fields["updated_at"] = storage.now()
    return fields


# -- statistics and reset -----------------------------------------------------------------

def statistics(store: Store) -> Doc:
    """Counts over the whole gallery; ratios are 0 on an empty gallery."""
    total_images = store.count_ready_images()
    without_faces = store.count_images_without_faces()
    with_faces = max(0, total_images - without_faces)
    total_faces = store.count("faces")
    total_persons = store.count("persons")
    return {
        "total_persons": total_persons,
        "total_images": total_images,
        "total_faces": total_faces,
        "total_albums": store.count("albums"),
        "total_sections": store.count("sections"),
        "images_with_faces": with_faces,
        "images_without_faces": without_faces,
        "manual_face_assignments": store.count("faces", {"is_manual_assignment": True}),
        "gallery_stats": {
            "face_coverage": round(100.0 * with_faces / total_images, 2) if total_images else 0.0,
            "avg_faces_per_image": round(total_faces / total_images, 2) if total_images else 0.0,
            "avg_faces_per_person": (round(total_faces / total_persons, 2)
                                     if total_persons else 0.0),
        },
    }


def reset(store: Store) -> Doc:
    """Wipe every collection; the embedding indexes of all workers reload on next use.

    Uploads and resets exclude each other through the database, so it holds across
    processes: the reset marks itself, waits for uploads being written to finish, then wipes
    and bumps the generation. Uploads meeting the mark, or analysed before the bump, are
    refused (409) before they write; image numbers are never given twice.
    :raise ConflictError: another reset is running, or uploads being written did not finish
        within ``RESET_WAIT_SECONDS`` (nothing was deleted).
    """
    holder = f"{processes.claimant()}:{storage.new_id()}"
    if not store.begin_reset(holder, RESET_TTL_SECONDS):
        raise ConflictError("Another reset is running; retry in a moment")
    try:
        _wait_for_uploads(store)
        removed = store.reset()
        store.new_epoch()
    finally:
        store.end_reset(holder)
    return {"documents_deleted": removed, "collections_cleared": sorted(removed)}


def _wait_for_uploads(store: Store) -> None:
    deadline = time.monotonic() + RESET_WAIT_SECONDS
    while True:
        moment = storage.now()
        writing = [lease for lease in store.upload_leases()
                   if (moment - lease["taken_at"]).total_seconds() < LEASE_TTL_SECONDS
                   and not processes.claimant_is_gone(lease["claimant"])]
        if not writing:
            return
        if time.monotonic() > deadline:
            raise ConflictError("Uploads are being written; nothing was deleted, retry the "
                                "reset in a moment", details={"uploads_in_flight": len(writing)})
        time.sleep(0.05)
