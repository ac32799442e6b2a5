"""Faces: crops, and moving faces between persons by hand."""

from __future__ import annotations

from flask import Blueprint

from routes.common import gallery
from routes.common import json_body
from routes.common import ok
from routes.common import optional_json_body
from routes.common import optional_str
from routes.common import require_str
from routes.common import send_bytes
from services import people

bp = Blueprint("faces", __name__)


@bp.get("/<face_id>")
def get_face_image(face_id: str):
    """The face's JPEG crop."""
    data, mime_type, etag = people.face_crop(gallery().store, face_id)
    return send_bytes(data, mime_type, etag, max_age=31536000)


@bp.get("/<face_id>/info")
def get_face(face_id: str):
    """The face's box, image, person and how it got there."""
    return ok(people.get_face(gallery().store, face_id), "Face retrieved successfully")


@bp.put("/<face_id>/move")
def move_face(face_id: str):
    """Move a face to ``target_person_id``; it is then a manual assignment."""
    target = require_str(json_body(), "target_person_id")
    return _moved(people.move_face(gallery().store, face_id, target), "Face moved successfully")


@bp.put("/<face_id>/move-to-new")
def move_face_to_new(face_id: str):
    """Move a face into a new person, named ``new_person_name`` or "Person N"."""
    name = optional_str(optional_json_body(), "new_person_name")
    return _moved(people.move_face_to_new(gallery().store, face_id, name),
                  "Face moved to a new person")


def _moved(result: dict, message: str):
    # Auto-cleanup is worth saying: the person the face left no longer exists.
    if result["source_person_deleted"]:
        message += "; the emptied person was deleted"
    return ok(result, message)
