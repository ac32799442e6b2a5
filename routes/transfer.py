"""The people data in and out: the export document, its import, and XMP sidecars."""

from __future__ import annotations

import typing as t

from apiflask import APIBlueprint
from apiflask import FileSchema
from flask import Response
from flask import stream_with_context

from routes import schemas
from routes.common import gallery
from routes.common import ok
from routes.common import timestamp
from routes.schemas import envelope
from services import exchange
from services import people_import
from services import xmp

bp = APIBlueprint("transfer", __name__, tag="Export and import")

XMP = FileSchema(type="string", format="binary")


@bp.get("/export")
@bp.output(schemas.ExportDocument, description="The document (not in the envelope), "
                                               "streamed as it is read; `Content-Disposition` "
                                               "names a file")
def export_people():
    """Every person, face, correction, album and filing as one JSON document (docs/export.md).

    Faces are named by their photo's sha256 and box, so the document applies to another
    gallery holding the same photos (`POST /import`).
    """
    moment = timestamp()
    chunks = exchange.export_document(gallery().store, exported_at=moment)
    stamp = moment.replace("-", "").replace(":", "").split(".")[0]
    response = Response(stream_with_context(chunks), mimetype="application/json")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="face-gallery-export-{stamp}Z.json"')
    return response


@bp.post("/import")
@bp.input(schemas.ExportDocument, arg_name="body")
@bp.output(envelope(schemas.ImportReport), description="Applied; the report says what "
                                                       "matched, what waits and what not")
@bp.doc(responses={409: "a re-clustering or another import is running: retry in a few "
                        "seconds",
                   413: "the body is over MAX_CONTENT_LENGTH: import a larger document with "
                        "`flask gallery import FILE.json`"})
def import_people(body: dict[str, t.Any]):
    """Apply an export document: persons, names, corrections, albums and filing.

    Photos are matched by sha256, faces by box overlap (IoU of at least 0.5); entries of
    photos not uploaded yet are kept and applied when they are. Importing the same document
    again changes nothing.
    """
    return ok(people_import.import_document(gallery().store, body),
              "Export document imported")


@bp.get("/images/<image_id>/xmp")
@bp.output(XMP, content_type=xmp.MIME_TYPE,
           description="An XMP packet with one MWG face region per face")
@bp.doc(tags=["Images"], responses={404: "the image does not exist"})
def get_image_xmp(image_id: str):
    """An XMP sidecar with Metadata Working Group face regions (digiKam, darktable,
    Lightroom): each face's normalised centre-based area and, for named persons, the name."""
    text = xmp.image_sidecar(gallery().store, image_id)
    return Response(text, mimetype=xmp.MIME_TYPE)
