"""Sections: sub-groups of images, standalone or inside an album."""

from __future__ import annotations

from flask import Blueprint
from flask import request

from routes.common import gallery
from routes.common import json_body
from routes.common import ok
from routes.common import optional_str
from routes.common import require_str
from services import catalog

bp = Blueprint("sections", __name__)


@bp.get("/")
def list_sections():
    """List sections, newest first; ``album_id`` narrows to one album's sections."""
    album_id = request.args.get("album_id") or None
    return ok(catalog.list_sections(gallery().store, album_id), "Sections retrieved successfully")


@bp.post("/")
def create_section():
    """Create a section (name 1-200 characters, optional description and album_id)."""
    body = json_body()
    section = catalog.create_section(gallery().store, require_str(body, "name"),
                                     optional_str(body, "description"),
                                     optional_str(body, "album_id"))
    return ok(section, "Section created successfully", 201)


@bp.get("/<section_id>")
def get_section(section_id: str):
    """One section."""
    return ok(catalog.get_section(gallery().store, section_id), "Section retrieved successfully")


@bp.put("/<section_id>")
def update_section(section_id: str):
    """Change a section's name, description or album (null detaches it)."""
    section = catalog.update_section(gallery().store, section_id, json_body())
    return ok(section, "Section updated successfully")


@bp.delete("/<section_id>")
def delete_section(section_id: str):
    """Delete a section; its images are kept and unassigned from it."""
    return ok(catalog.delete_section(gallery().store, section_id),
              "Section deleted successfully")
