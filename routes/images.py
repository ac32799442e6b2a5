"""Images: upload, list, read, file away and delete photos; search people by photo."""

from __future__ import annotations

from flask import Blueprint
from flask import current_app
from flask import request
from werkzeug.exceptions import MethodNotAllowed

from errors import ValidationError
from routes.common import accepted
from routes.common import form_id
from routes.common import gallery
from routes.common import json_body
from routes.common import ok
from routes.common import pagination
from routes.common import parse_bool
from routes.common import parse_float
from routes.common import parse_int
from routes.common import query_date
from routes.common import query_int
from routes.common import send_bytes
from routes.common import uploaded_files
from services import jobs
from services import photos
from services import recognition
from services import upload

bp = Blueprint("images", __name__)


@bp.post("/upload")
def upload_image():
    """Upload one photo (field ``file``); faces are detected and assigned to persons."""
    album_id, section_id = form_id("album_id"), form_id("section_id")
    photo = uploaded_files("file")[0]
    result = upload.upload_image(gallery(), photo.read(), photo.filename or "",
                                         album_id=album_id, section_id=section_id)
    message = "Image already uploaded" if result["duplicate"] else "Image uploaded successfully"
    return ok(result, message, 200 if result["duplicate"] else 201)


@bp.post("/upload-multiple")
def upload_images():
    """Upload several photos (field ``files``); one bad file never fails the others.

    200 when every file was stored or already there, 207 when some failed. With
    ``?async=true``: 202 once the files are stored, with the job that processes them.
    """
    album_id, section_id = form_id("album_id"), form_id("section_id")
    files = uploaded_files("files", "files[]", "file")
    if parse_bool(request.args.get("async"), "async", False):
        job = jobs.submit_upload(gallery(), [(f.filename or "", f.read) for f in files],
                                 album_id=album_id, section_id=section_id)
        return accepted(job, f"{job['total']} images queued")
    result = upload.upload_batch(gallery(), [(f.filename or "", f.read) for f in files],
                                 album_id=album_id, section_id=section_id)
    message = (f"{result['successful_uploads']} uploaded, {result['duplicates']} already "
               f"stored, {result['failed_uploads']} failed of {result['total_images']} images")
    return ok(result, message, 207 if result["failed_uploads"] else 200)


@bp.post("/search-by-image")
def search_by_image():
    """Find the persons whose faces match the faces of a photo; nothing is stored."""
    photo = uploaded_files("file")[0]
    config = current_app.config
    tolerance = parse_float(request.form.get("tolerance", request.args.get("tolerance")),
                            "tolerance", config["FACE_RECOGNITION_TOLERANCE"], low=0.0, high=1.0)
    limit = parse_int(request.form.get("limit", request.args.get("limit")), "limit", 10,
                      minimum=1, maximum=100)
    group_by = request.form.get("group_by", request.args.get("group_by", "person"))
    if group_by not in {"person", "face"}:
        raise ValidationError("'group_by' must be person or face", details={"field": "group_by"})
    result = recognition.search_by_image(gallery(), photo.read(), tolerance=tolerance,
                                         limit=limit, group_by=group_by)
    return ok(result, f"{result['total_matches']} matches found")


@bp.get("/")
def list_images():
    """Images newest first; filter by album_id, section_id, person_id, date_from, date_to."""
    limit, offset = pagination()
    result = photos.list_images(
        gallery().store, album_id=request.args.get("album_id") or None,
        section_id=request.args.get("section_id") or None,
        person_id=request.args.get("person_id") or None,
        date_from=query_date("date_from"), date_to=query_date("date_to", end_of_day=True),
        limit=limit, offset=offset)
    return ok(result, "Images retrieved successfully")


@bp.get("/<image_id>")
def get_image(image_id: str):
    """One image with its faces, persons, album, section and EXIF data."""
    if image_id == "search-by-image":
        # The POST-only route's path would otherwise read as an (invalid) image id.
        raise MethodNotAllowed(valid_methods=["POST"])
    return ok(photos.get_image(gallery().store, image_id), "Image retrieved successfully")


@bp.get("/<image_id>/file")
def get_image_file(image_id: str):
    """The stored photo's bytes with its Content-Type."""
    data, mime_type, etag = photos.image_file(gallery().store, image_id)
    return send_bytes(data, mime_type, etag, max_age=31536000)


@bp.get("/<image_id>/thumbnail")
def get_image_thumbnail(image_id: str):
    """A JPEG thumbnail fitting THUMBNAIL_SIZE (or ``?size=``, 16-1024)."""
    size = query_int("size", current_app.config["THUMBNAIL_SIZE"], minimum=16, maximum=1024)
    data, mime_type, etag = photos.image_thumbnail(gallery().store, image_id, size)
    return send_bytes(data, mime_type, etag, max_age=31536000)


@bp.put("/<image_id>")
def update_image(image_id: str):
    """Move an image between albums and sections (null unassigns) or rename its file."""
    image = photos.update_image(gallery().store, image_id, json_body())
    return ok(image, "Image updated successfully")


@bp.delete("/<image_id>")
def delete_image(image_id: str):
    """Delete an image with its faces; persons left without faces are deleted."""
    return ok(photos.delete_image(gallery().store, image_id),
              "Image deleted successfully")

