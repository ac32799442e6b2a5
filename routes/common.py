"""What every blueprint shares: the envelopes, input parsing, and the per-app handles."""

from __future__ import annotations

import typing as t
from datetime import UTC
from datetime import datetime

from flask import current_app
from flask import g
from flask import jsonify
from flask import request
from flask import url_for
from werkzeug.exceptions import UnsupportedMediaType

from errors import ValidationError
from services.context import Gallery


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ok(data: t.Any, message: str = "Operation completed successfully", status: int = 200
       ) -> tuple[t.Any, int]:
    """The success envelope: ``{success, data, message, timestamp}``."""
    return jsonify({"success": True, "data": jsonable(data), "message": message,
                    "timestamp": timestamp()}), status


def accepted(job: dict[str, t.Any], message: str) -> tuple[t.Any, int]:
    """202 for work handed to a background job: the job, and its URL in ``Location``."""
    location = url_for("jobs.get_job", job_id=job["job_id"])
    response, status = ok({**job, "status_url": location}, message, 202)
    response.headers["Location"] = location
    return response, status


def error_response(message: str, error_type: str, code: int, details: t.Any = None
                   ) -> tuple[t.Any, int]:
    """The error envelope: ``{success: false, error, error_type, code, details?, ...}``."""
    body: dict[str, t.Any] = {"success": False, "error": message, "error_type": error_type,
                              "code": code}
    if details is not None:
        body["details"] = jsonable(details)
    body["timestamp"] = timestamp()
    body["request_id"] = g.get("request_id", "")
    return jsonify(body), code


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


def json_body() -> dict[str, t.Any]:
    """The request's JSON object: 415 when the body is not JSON, 400 when not an object."""
    if not request.is_json:
        raise UnsupportedMediaType("Send a JSON body with Content-Type: application/json")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ValidationError("Request body must be a JSON object",
                              details={"content_type": request.content_type})
    return data


def optional_json_body() -> dict[str, t.Any]:
    """Like :func:`json_body`, but an empty body is an empty object."""
    if not request.get_data(cache=True):
        return {}
    return json_body()


def require_str(body: dict[str, t.Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise ValidationError(f"'{field}' is required and must be a string",
                              details={"field": field})
    return value


def optional_str(body: dict[str, t.Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"'{field}' must be a string", details={"field": field})
    return value


def require_str_list(body: dict[str, t.Any], field: str) -> list[str]:
    value = body.get(field)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"'{field}' must be a non-empty list of ids",
                              details={"field": field})
    return value


def query_text(name: str, *, max_length: int = 200) -> str:
    """A free-text query parameter; control characters and very long values are refused."""
    value = request.args.get(name, "")
    if len(value) > max_length or any(not ch.isprintable() for ch in value):
        raise ValidationError(f"'{name}' must be at most {max_length} printable characters",
                              details={"field": name})
    return value


def query_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    return parse_int(request.args.get(name), name, default, minimum=minimum, maximum=maximum)


def parse_int(raw: t.Any, name: str, default: int, *, minimum: int = 0,
              maximum: int | None = None) -> int:
    """An integer from a query string or JSON value; 400 naming ``name`` when it is not one."""
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValidationError(f"'{name}' must be an integer", details={"field": name})
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"'{name}' must be an integer", details={"field": name}) from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValidationError(f"'{name}' must be {bounds}", details={"field": name})
    return value


def parse_float(raw: t.Any, name: str, default: float, *, low: float, high: float) -> float:
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        raise ValidationError(f"'{name}' must be a number", details={"field": name})
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValidationError(f"'{name}' must be a number", details={"field": name}) from None
    if not low <= value <= high:
        raise ValidationError(f"'{name}' must be between {low} and {high}",
                              details={"field": name})
    return value


def parse_bool(raw: t.Any, name: str, default: bool) -> bool:
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in {"true", "1", "yes"}:
        return True
    if value in {"false", "0", "no"}:
        return False
    raise ValidationError(f"'{name}' must be true or false", details={"field": name})


def pagination(default_limit: int = 50, max_limit: int = 500) -> tuple[int, int]:
    return (query_int("limit", default_limit, minimum=1, maximum=max_limit),
            query_int("offset", 0, minimum=0, maximum=10**9))


def send_bytes(data: bytes, mime_type: str, etag: str, *, max_age: int = 86400) -> t.Any:
    """Binary response with ETag and caching; answers 304 to a matching If-None-Match."""
    from flask import Response

    response = Response(data, mimetype=mime_type)
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = max_age
    return response.make_conditional(request)


def uploaded_files(*fields: str) -> list[t.Any]:
    """The files of a multipart request under any of ``fields``; 415 when not multipart."""
    if not request.mimetype.startswith("multipart/form-data"):
        raise UnsupportedMediaType("Upload files as multipart/form-data")
    files = [f for field in fields for f in request.files.getlist(field)]
    if not files:
        raise ValidationError(f"No file provided: send it in the '{fields[0]}' field",
                              details={"field": fields[0]})
    return files


def form_id(name: str) -> str | None:
    """An optional id from the form or query string ("" and "null" mean none)."""
    value = request.form.get(name, request.args.get(name))
    if value is None or value.strip() in {"", "null", "none"}:
        return None
    return value.strip()


def query_date(name: str, *, end_of_day: bool = False) -> datetime | None:
    """An ISO-8601 date or datetime query parameter as naive UTC; 400 when malformed."""
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"'{name}' must be an ISO-8601 date such as 2024-06-30",
                              details={"field": name}) from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValidationError(f"'{name}' is out of range", details={"field": name}) from None
    if end_of_day and len(raw) == 10:
        value = value.replace(hour=23, minute=59, second=59, microsecond=999000)
    return value
