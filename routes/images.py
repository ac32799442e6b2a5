"""Images: upload, list, read, file away and delete photos; search people by photo."""

from __future__ import annotations

import typing as t

from apiflask import APIBlueprint
from apiflask import FileSchema
from flask import current_app
from flask import url_for

from routes import schemas
from routes.common import accepted
from routes.common import created
from routes.common import form_id
from routes.common import gallery
from routes.common import ok
from routes.common import send_file_part
from routes.common import uploaded_files
from routes.schemas import envelope
from services import face_edits
from services import jobs
from services import photos
from services import recognition
from services import upload

bp = APIBlueprint("images", __name__, tag="Images")

#: The image routes' id: never one of the static paths beside it.
IMAGE = '/<id("upload","upload-multiple","search-by-image"):image_id>'
JPEG = FileSchema(type="string", format="binary")


@bp.post("/upload")
@bp.input(schemas.UploadForm, location="form_and_files", arg_name="form")
@bp.output(envelope(schemas.UploadResult), status_code=201,
           description="Stored; faces detected and assigned (`Location`: the image)")
@bp.doc(responses={200: {"description": "These bytes were stored already: the stored image, "
                                        "`duplicate: true`",
                         "content": {"application/json": {"schema": {
                             "$ref": "#/components/schemas/UploadResultEnvelope"}}}},
                   404: "the album or section does not exist",
                   409: "the same photo is still being stored by another request",
                   413: "the request is over MAX_CONTENT_LENGTH"})
def upload_image(form: dict[str, t.Any]):
    """Upload one photo; faces are detected and assigned to persons.

    The type is decided by the bytes, not the name. Uploading bytes already stored answers
    200 with the stored image and `duplicate: true`.
    """
    photo = uploaded_files("file", single=True)[0]
    result = upload.upload_image(gallery(), photo.read(), photo.filename or "",
                                 album_id=form_id("album_id"), section_id=form_id("section_id"))
    if result["duplicate"]:
        return ok(result, "Image already uploaded")
    return created(result, "Image uploaded successfully",
                   url_for("images.get_image", image_id=result["image_id"]))


@bp.post("/upload-multiple")
@bp.input(schemas.AsyncQuery, location="query", arg_name="query")
@bp.input(schemas.UploadManyForm, location="form_and_files", arg_name="form")
@bp.output(envelope(schemas.BatchResult), description="Every file stored or already there")
@bp.doc(responses={207: {"description": "Some files failed: each result says why",
                         "content": {"application/json": {"schema": {
                             "$ref": "#/components/schemas/BatchResultEnvelope"}}}},
                   202: {"description": "`async=true`: files stored, a job processes them "
                                        "(`Location`: the job)",
                         "content": {"application/json": {"schema": {
                             "$ref": "#/components/schemas/JobEnvelope"}}}},
                   404: "the album or section does not exist",
                   413: "the request is over MAX_CONTENT_LENGTH"})
def upload_images(query: dict[str, t.Any], form: dict[str, t.Any]):
    """Upload several photos; one bad file never fails the others.

    200 when every file was stored or already there, 207 when some failed. With
    `?async=true`: 202 once the files are stored, with the job that processes them.
    """
    album_id, section_id = form_id("album_id"), form_id("section_id")
    files = uploaded_files("files", "files[]", "file")
    if query["run_async"]:
        job = jobs.submit_upload(gallery(), [(f.filename or "", f.read) for f in files],
                                 album_id=album_id, section_id=section_id)
        return accepted(job, f"{job['total']} images queued")
    result = upload.upload_batch(gallery(), [(f.filename or "", f.read) for f in files],
                                 album_id=album_id, section_id=section_id)
    message = (f"{result['successful_uploads']} uploaded, {result['duplicates']} already "
               f"stored, {result['failed_uploads']} failed of {result['total_images']} images")
    return ok(result, message, 207 if result["failed_uploads"] else 200)


@bp.post("/search-by-image")
@bp.input(schemas.SearchQuery, location="query", arg_name="query")
@bp.input(schemas.SearchForm, location="form_and_files", arg_name="form")
@bp.output(envelope(schemas.SearchResult))
@bp.doc(responses={422: "no face in the photo", 413: "the request is over MAX_CONTENT_LENGTH"})
def search_by_image(query: dict[str, t.Any], form: dict[str, t.Any]):
    """Find the persons whose faces match the faces of a photo; nothing is stored.

    `tolerance`, `limit` and `group_by` may come in the form or the query string.
    """
    photo = uploaded_files("file", single=True)[0]
    params = {**query, **{k: v for k, v in form.items() if k != "file"}}
    result = recognition.search_by_image(
        gallery(), photo.read(),
        tolerance=params.get("tolerance", current_app.config["FACE_RECOGNITION_TOLERANCE"]),
        limit=params.get("limit", 10), group_by=params.get("group_by", "person"))
    return ok(result, f"{result['total_matches']} matches found")


@bp.get("/")
@bp.input(schemas.ImageListQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.ImagePage))
@bp.doc(responses={404: "the album, section or person filtered on does not exist"})
def list_images(query: dict[str, t.Any]):
    """Images, newest upload first, filtered by album, section, persons and date.

    `person_id` repeated: images showing all of them; with `only=true` no one else
    (`only=true` alone: images showing nobody).
    `exclude_person_id` (repeatable): images showing none of them.
    """
    result = photos.list_images(
        gallery().store, album_id=query.get("album_id") or None,
        section_id=query.get("section_id") or None, person_ids=query.get("person_id", []),
        only=query["only"], exclude_person_ids=query.get("exclude_person_id", []),
        date_from=query.get("date_from"), date_to=query.get("date_to"),
        limit=query["limit"], offset=query["offset"])
    return ok(result, "Images retrieved successfully")


@bp.get(IMAGE)
@bp.output(envelope(schemas.ImageDetail))
def get_image(image_id: str):
    """One image with its faces, persons, album, section and EXIF data."""
    return ok(photos.get_image(gallery().store, image_id), "Image retrieved successfully")


@bp.post(IMAGE + "/faces")
@bp.input(schemas.FaceDraw, arg_name="body")
@bp.output(envelope(schemas.DrawnFace), status_code=201,
           description="Stored and assigned (`Location`: the face)")
@bp.doc(responses={404: "the image or person does not exist",
                   409: "the person already has a face in this photo, or a re-clustering "
                        "is running"})
def add_image_face(image_id: str, body: dict[str, t.Any]):
    """Add a face the detector missed: a box in the stored image's pixels.

    The box is encoded even where no face was detected. The face goes to `person_id`, or
    to the nearest person within tolerance (none with a face in this photo), or to a new
    person; it is a manual assignment either way.
    """
    box = {k: body[k] for k in ("top", "right", "bottom", "left")}
    face = face_edits.add_face(gallery(), image_id, box, body.get("person_id"))
    return created(face, "Face added", url_for("faces.get_face", face_id=face["face_id"]))


@bp.get(IMAGE + "/file")
@bp.input(schemas.FileQuery, location="query", arg_name="query")
@bp.output(JPEG, content_type="image/*", description="The stored bytes (ETag; 304 to "
                                                     "If-None-Match)")
@bp.doc(responses={304: "not modified"})
def get_image_file(image_id: str, query: dict[str, t.Any]):
    """The photo exactly as uploaded (format, EXIF and bytes; a compressed copy when
    STORE_ORIGINALS is off), or with `size` a JPEG fitted into that many pixels for screens.
    """
    found = photos.image_file(gallery().store, image_id, size=query.get("size"),
                              display_max=current_app.config["IMAGE_MAX_DIMENSION"])
    return send_file_part(found, max_age=31536000)


@bp.get(IMAGE + "/thumbnail")
@bp.input(schemas.ThumbnailQuery, location="query", arg_name="query")
@bp.output(JPEG, content_type="image/jpeg", description="A JPEG fitting the size")
@bp.doc(responses={304: "not modified"})
def get_image_thumbnail(image_id: str, query: dict[str, t.Any]):
    """A JPEG thumbnail fitting THUMBNAIL_SIZE, or `size` (16-1024)."""
    size = query.get("size", current_app.config["THUMBNAIL_SIZE"])
    found = photos.image_thumbnail(gallery().store, image_id, size,
                                   display_max=current_app.config["IMAGE_MAX_DIMENSION"])
    return send_file_part(found, max_age=31536000)


@bp.put(IMAGE)
@bp.input(schemas.ImageUpdate, arg_name="body")
@bp.output(envelope(schemas.ImageDetail))
def update_image(image_id: str, body: dict[str, t.Any]):
    """Move an image between albums and sections (null unassigns) or rename its file."""
    return ok(photos.update_image(gallery().store, image_id, body), "Image updated successfully")


@bp.delete(IMAGE)
@bp.output(envelope(schemas.ImageDeleted))
@bp.doc(responses={409: "a re-clustering is running: retry in a few seconds"})
def delete_image(image_id: str):
    """Delete an image with its faces; persons left without faces are deleted."""
    return ok(photos.delete_image(gallery().store, image_id), "Image deleted successfully")
