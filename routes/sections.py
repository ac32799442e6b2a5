"""Sections: sub-groups of images, standalone or inside an album."""

from __future__ import annotations

import typing as t

from apiflask import APIBlueprint
from flask import url_for

from routes import schemas
from routes.common import created
from routes.common import gallery
from routes.common import ok
from routes.schemas import envelope
from services import catalog

bp = APIBlueprint("sections", __name__, tag="Sections")


@bp.get("/")
@bp.input(schemas.SectionListQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.SectionList))
@bp.doc(responses={404: "the album does not exist"})
def list_sections(query: dict[str, t.Any]):
    """Sections, newest first; `album_id` narrows to one album's sections."""
    return ok(catalog.list_sections(gallery().store, query.get("album_id") or None),
              "Sections retrieved successfully")


@bp.post("/")
@bp.input(schemas.SectionCreate, arg_name="body")
@bp.doc(responses={404: "the album does not exist"})
@bp.output(envelope(schemas.Section), status_code=201,
           description="Created (`Location`: the section)")
def create_section(body: dict[str, t.Any]):
    """Create a section (name 1-200 characters, optional description and album)."""
    section = catalog.create_section(gallery().store, body["name"], body.get("description"),
                                     body.get("album_id"))
    return created(section, "Section created successfully",
                   url_for("sections.get_section", section_id=section["_id"]))


@bp.get("/<section_id>")
@bp.output(envelope(schemas.Section))
def get_section(section_id: str):
    """One section."""
    return ok(catalog.get_section(gallery().store, section_id), "Section retrieved successfully")


@bp.put("/<section_id>")
@bp.input(schemas.SectionUpdate, arg_name="body")
@bp.output(envelope(schemas.Section))
def update_section(section_id: str, body: dict[str, t.Any]):
    """Change a section's name, description or album (null detaches it)."""
    return ok(catalog.update_section(gallery().store, section_id, body),
              "Section updated successfully")


@bp.delete("/<section_id>")
@bp.output(envelope(schemas.SectionDeleted))
def delete_section(section_id: str):
    """Delete a section; its images are kept and unassigned from it."""
    return ok(catalog.delete_section(gallery().store, section_id),
              "Section deleted successfully")
