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
from services import corrections
from services import curation
from services import explanation
from services import face_edits
from services import people

bp = APIBlueprint("faces", __name__, tag="Faces")

MOVE_CONFLICTS = {409: "the person already has a face of the same photo, or a re-clustering "
                       "is running"}


@bp.get('/<id("review"):face_id>')
@bp.output(JPEG, content_type="image/jpeg", description="The face's crop")
@bp.doc(responses={304: "not modified"})
def get_face_image(face_id: str):
    """The face's JPEG crop."""
    data, mime_type, etag = people.face_crop(gallery().store, face_id)
    return send_bytes(data, mime_type, etag, max_age=31536000)


@bp.delete('/<id("review"):face_id>')
@bp.output(envelope(schemas.FaceDeleted))
@bp.doc(responses={409: "a re-clustering is running: retry in a few seconds"})
def delete_face(face_id: str):
    """Delete a false face; its person is deleted if emptied. Its box is kept on the image,
    so a later detection there is not stored again."""
    result = face_edits.delete_face(gallery().store, face_id)
    message = "Face deleted" + ("; the emptied person was deleted"
                                if result["person_deleted"] else "")
    return ok(result, message)


@bp.get("/<face_id>/info")
@bp.output(envelope(schemas.Face))
def get_face(face_id: str):
    """The face's box, image, person and how it got there."""
    return ok(people.get_face(gallery().store, face_id), "Face retrieved successfully")


@bp.get("/<face_id>/explain")
@bp.input(schemas.ExplainQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.Explanation))
def explain_face(face_id: str, query: dict[str, t.Any]):
    """Why the face is in its person: how it got there, its average-linkage distance to the
    person against the threshold, what the upload's rule would choose today, its nearest
    faces in its person and in the runner-up person, and the constraints that apply."""
    return ok(explanation.explain_face(gallery(), face_id, limit=query["limit"]),
              "Face explained")


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


@bp.put("/<face_id>/reject")
@bp.input(schemas.RejectBody, arg_name="body")
@bp.output(envelope(schemas.Rejected))
@bp.doc(responses={409: "a re-clustering is running"})
def reject_face(face_id: str, body: dict[str, t.Any]):
    """Not this person: move the face into a new person and keep it out of `person_id` for good.

    `person_id` defaults to the face's person and must be it (400 otherwise). Uploads,
    re-clustering and merges never put the face back; a hand move into that person forgets
    the rejection. The body is optional.
    """
    return ok(corrections.reject_face(gallery().store, face_id, body.get("person_id")),
              "Face rejected from the person")


@bp.delete("/<face_id>/reject")
@bp.input(schemas.RejectQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.RejectionsForgotten))
def forget_face_rejection(face_id: str, query: dict[str, t.Any]):
    """Forget that the face is not `person_id` (every rejection of the face without it)."""
    return ok(corrections.forget_rejection(gallery().store, face_id, query.get("person_id")),
              "Rejection forgotten")


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


# -- review queue (issue 14) --------------------------------------------------------------
# "review" is reserved in get_face_image's rule, so this path is never read as a face id.

@bp.get("/review")
@bp.input(schemas.PageQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.ReviewPage))
def list_faces_to_review(query: dict[str, t.Any]):
    """Automatic faces most likely in the wrong person first: far from their person,
    alone in it, or of low quality; each with its person, distance and reasons."""
    return ok(curation.review_queue(gallery(), limit=query["limit"], offset=query["offset"]),
              "Review queue retrieved successfully")
