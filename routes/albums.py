"""Albums: named groups of images, optionally split into sections."""

from __future__ import annotations

from flask import Blueprint

from routes.common import gallery
from routes.common import json_body
from routes.common import ok
from routes.common import optional_str
from routes.common import require_str
from services import catalog

bp = Blueprint("albums", __name__)


@bp.get("/")
def list_albums():
    """List albums, newest first, each with its image and section counts."""
    return ok(catalog.list_albums(gallery().store), "Albums retrieved successfully")


@bp.post("/")
def create_album():
    """Create an album (name 1-200 characters, optional description)."""
    body = json_body()
    album = catalog.create_album(gallery().store, require_str(body, "name"),
                                 optional_str(body, "description"))
    return ok(album, "Album created successfully", 201)


@bp.get("/<album_id>")
def get_album(album_id: str):
    """One album with its sections."""
    return ok(catalog.get_album(gallery().store, album_id), "Album retrieved successfully")


@bp.put("/<album_id>")
def update_album(album_id: str):
    """Change an album's name and/or description."""
    album = catalog.update_album(gallery().store, album_id, json_body())
    return ok(album, "Album updated successfully")


@bp.delete("/<album_id>")
def delete_album(album_id: str):
    """Delete an album; its images and sections are kept and unassigned from it."""
    return ok(catalog.delete_album(gallery().store, album_id), "Album deleted successfully")
