"""Persons: the people found in the photos, with their faces and images."""

from __future__ import annotations

from flask import Blueprint
from flask import request

from routes.common import gallery
from routes.common import json_body
from routes.common import ok
from routes.common import pagination
from routes.common import query_text
from routes.common import require_str
from routes.common import require_str_list
from routes.common import send_bytes
from services import people

bp = Blueprint("persons", __name__)


@bp.get("/")
def list_persons():
    """Persons; ``sort`` name|created_at|face_count, ``order`` asc|desc, ``q`` name prefix."""
    limit, offset = pagination()
    result = people.list_persons(gallery().store, sort=request.args.get("sort", "face_count"),
                                 order=request.args.get("order") or None,
                                 q=query_text("q"), limit=limit, offset=offset)
    return ok(result, "Persons retrieved successfully")


@bp.get("/<person_id>")
def get_person(person_id: str):
    """One person with a page (limit/offset) of its faces and of its images."""
    limit, offset = pagination()
    return ok(people.get_person(gallery().store, person_id, limit=limit, offset=offset),
              "Person retrieved successfully")


@bp.put("/<person_id>/rename")
def rename_person(person_id: str):
    """Rename a person (1-100 characters after trimming)."""
    name = require_str(json_body(), "name")
    return ok(people.rename_person(gallery().store, person_id, name),
              "Person renamed successfully")


@bp.put("/<person_id>/merge")
def merge_persons(person_id: str):
    """Move all faces of ``source_person_ids`` into this person and delete the sources."""
    sources = require_str_list(json_body(), "source_person_ids")
    result = people.merge_persons(gallery().store, person_id, sources)
    return ok(result, "Persons merged successfully")


@bp.get("/<person_id>/thumbnail")
def get_person_thumbnail(person_id: str):
    """The JPEG crop of the person's best-quality face."""
    data, mime_type, etag = people.person_thumbnail(gallery().store, person_id)
    return send_bytes(data, mime_type, etag, max_age=300)
