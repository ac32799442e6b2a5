"""Faces: crops, and moving faces between persons by hand."""

from __future__ import annotations

import typing as t

from apiflask import APIBlueprint

from routes import schemas
from routes.common import gallery
from routes.common import ok
from routes.common import send_bytes
from routes.images import JPEG
from routes.schemas import envelope
from services import people

bp = APIBlueprint("faces", __name__, tag="Faces")

MOVE_CONFLICTS = {409: "the person already has a face of the same photo, or a re-clustering "
                       "is running"}


@bp.get("/<face_id>")
@bp.output(JPEG, content_type="image/jpeg", description="The face's crop")
@bp.doc(responses={304: "not modified"})
def get_face_image(face_id: str):
    """The face's JPEG crop."""
    data, mime_type, etag = people.face_crop(gallery().store, face_id)
    return send_bytes(data, mime_type, etag, max_age=31536000)


@bp.get("/<face_id>/info")
@bp.output(envelope(schemas.Face))
def get_face(face_id: str):
    """The face's box, image, person and how it got there."""
    return ok(people.get_face(gallery().store, face_id), "Face retrieved successfully")


@bp.put("/<face_id>/move")
@bp.input(schemas.MoveBody, arg_name="body")
@bp.output(envelope(schemas.Moved))
@bp.doc(responses=MOVE_CONFLICTS)
def move_face(face_id: str, body: dict[str, t.Any]):
    """Move a face to `target_person_id`; it is then a manual assignment."""
    return _moved(people.move_face(gallery().store, face_id, body["target_person_id"]),
                  "Face moved successfully")


@bp.put("/<face_id>/move-to-new")
@bp.input(schemas.MoveToNewBody, arg_name="body")
@bp.output(envelope(schemas.MovedToNew))
@bp.doc(responses=MOVE_CONFLICTS)
def move_face_to_new(face_id: str, body: dict[str, t.Any]):
    """Move a face into a new person, named `new_person_name` or "Person N".

    The body is optional. The answer is 200, as for any move: the face is what changed.
    """
    return _moved(people.move_face_to_new(gallery().store, face_id,
                                          body.get("new_person_name")),
                  "Face moved to a new person")


@bp.put("/<face_id>/confirm")
@bp.output(envelope(schemas.Confirmed))
@bp.doc(responses={409: "a re-clustering is running: retry in a few seconds"})
def confirm_face(face_id: str):
    """Confirm the face's person: an automatic assignment becomes manual, and re-clustering
    keeps it there. Confirming a manual face changes nothing."""
    result = people.confirm_face(gallery().store, face_id)
    return ok(result, "Face was confirmed already" if result["was_manual"] else "Face confirmed")


def _moved(result: dict, message: str):
    # Auto-cleanup is worth saying: the person the face left no longer exists.
    if result["source_person_deleted"]:
        message += "; the emptied person was deleted"
    return ok(result, message)
