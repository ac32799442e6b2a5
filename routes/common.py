"""What every blueprint shares: the envelopes, the checks every request body gets, and the
per-app handles. Parameters and bodies are validated by the schemas in :mod:`routes.schemas`."""

from __future__ import annotations

import re
import typing as t
from datetime import UTC
from datetime import datetime

from flask import Response
from flask import current_app
from flask import g
from flask import jsonify
from flask import request
from flask import send_file
from flask import url_for
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.routing import BaseConverter
from werkzeug.routing import Map

from errors import ValidationError
from routes.schemas import Update
from services.context import Gallery


class IdConverter(BaseConverter):
    """``<id("upload"):image_id>``: any path segment except the reserved words, so
    ``PUT /images/upload`` is a 405 of the ``/images/upload`` route rather than an update of
    an image called "upload". A malformed id still reaches the view, which answers 400."""

    def __init__(self, url_map: Map, *reserved: str) -> None:
        super().__init__(url_map)
        if reserved:
            words = "|".join(re.escape(word) for word in reserved)
            self.regex = rf"(?!(?:{words})(?:/|$))[^/]+"


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ok(data: t.Any, message: str = "Operation completed successfully", status: int = 200,
       *, location: str | None = None) -> Response:
    """The success envelope ``{success, data, message, timestamp}``; ``location`` names a
    resource the request created (``Location`` header)."""
    # A Response, not a (body, status) tuple: apiflask's output schemas then only document.
    response = jsonify({"success": True, "data": jsonable(data), "message": message,
                        "timestamp": timestamp()})
    response.status_code = status
    if location is not None:
        response.headers["Location"] = location
    return response


def created(data: t.Any, message: str, location: str) -> Response:
    """201 for a new resource, its URL in ``Location``."""
    return ok(data, message, 201, location=location)


def accepted(job: dict[str, t.Any], message: str) -> Response:
    """202 for work handed to a background job: the job, and its URL in ``Location``."""
    location = url_for("jobs.get_job", job_id=job["job_id"])
    return ok({**job, "status_url": location}, message, 202, location=location)


def error_response(message: str, error_type: str, code: int, details: t.Any = None
                   ) -> Response:
    """The error envelope: ``{success: false, error, error_type, code, details?, ...}``."""
    body: dict[str, t.Any] = {"success": False, "error": message, "error_type": error_type,
                              "code": code}
    if details is not None:
        body["details"] = jsonable(details)
    body["timestamp"] = timestamp()
    body["request_id"] = g.get("request_id", "")
    response = jsonify(body)
    response.status_code = code
    return response


def validation_error(messages: t.Any) -> ValidationError:
    """A schema's complaints (``{location: {field: [message]}}``) as one ValidationError
    naming the first field, with every complaint in ``details.errors``."""
    location, field, problem = _first_problem(messages)
    where = f"'{field}'" if field else "The request body"
    if location in {"query", "path"} and field:
        where = f"Query parameter '{field}'" if location == "query" else f"'{field}'"
    return ValidationError(f"{where}: {problem}",
                           details={"field": field, "location": location, "errors": messages})


def _first_problem(messages: t.Any, location: str = "", field: str = "") -> tuple[str, str, str]:
    if isinstance(messages, dict) and messages:
        key, value = next(iter(messages.items()))
        if not location:
            return _first_problem(value, str(key), "")
        if key == "_schema":
            return _first_problem(value, location, field)
        path = f"{field}.{key}" if field else str(key)
        return _first_problem(value, location, path)
    if isinstance(messages, list) and messages:
        return _first_problem(messages[0], location, field)
    return location, field, str(messages) if messages else "Invalid value."


def check_body_type() -> None:
    """Before a view with a body schema: 415 when the body is not the documented media type.
    (Nesting depth is refused by :func:`routes.jsonbody.refuse_deep_json`; malformed JSON by
    the schema's parser, each 400.)"""
    view = current_app.view_functions.get(request.endpoint or "")
    spec = getattr(view, "_spec", None)
    if not spec or not spec.get("body"):
        return
    media_type = spec.get("content_type", "application/json")
    if media_type == "multipart/form-data":
        if not request.mimetype.startswith("multipart/form-data"):
            raise UnsupportedMediaType("Upload files as multipart/form-data")
        return
    if request.is_json:
        return
    if request.content_length or _body_required(spec["body"]):
        raise UnsupportedMediaType("Send a JSON body with Content-Type: application/json")


def _body_required(schema: t.Any) -> bool:
    # The same rule as the document's `requestBody.required` (routes.contract).
    return isinstance(schema, Update) or any(f.required for f in schema.fields.values())


def jsonable(value: t.Any) -> t.Any:
    """Dates as ISO-8601 UTC strings, everything else as it is."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    return value


def gallery() -> Gallery:
    return current_app.extensions["face_gallery"]


def send_bytes(data: bytes, mime_type: str, etag: str, *, max_age: int = 86400) -> t.Any:
    """Binary response with ETag and caching; answers 304 to a matching If-None-Match."""
    response = Response(data, mimetype=mime_type)
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = max_age
    return response.make_conditional(request)


def send_file_part(found: t.Any, *, max_age: int = 86400) -> t.Any:
    """A stored file: streamed from disk when the files store holds it, else its bytes.
    ``found`` is a :class:`services.photos.ImageFile`."""
    if found.path is None:
        return send_bytes(found.data, found.mime_type, found.etag, max_age=max_age)
    response = send_file(found.path, mimetype=found.mime_type, etag=found.etag,
                         max_age=max_age, conditional=True)
    response.cache_control.public = True
    return response


def uploaded_files(*fields: str, single: bool = False) -> list[t.Any]:
    """The files of a multipart request under any of ``fields``; with ``single``, a second
    file is a 400 rather than silently ignored."""
    files = [f for field in fields for f in request.files.getlist(field)]
    if not files:
        raise ValidationError(f"No file provided: send it in the '{fields[0]}' field",
                              details={"field": fields[0]})
    if single and len(files) > 1:
        raise ValidationError(f"Send one file in '{fields[0]}' ({len(files)} were sent); "
                              "POST /images/upload-multiple takes several",
                              details={"field": fields[0], "files": len(files)})
    return files


def form_id(name: str) -> str | None:
    """An optional id from the form or query string ("" and "null" mean none)."""
    value = request.form.get(name, request.args.get(name))
    if value is None or value.strip() in {"", "null", "none"}:
        return None
    return value.strip()
