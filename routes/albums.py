"""Albums: named groups of images, optionally split into sections."""

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

bp = APIBlueprint("albums", __name__, tag="Albums")


@bp.get("/")
@bp.output(envelope(schemas.AlbumList))
def list_albums():
    """Albums, newest first, each with its image and section counts."""
    return ok(catalog.list_albums(gallery().store), "Albums retrieved successfully")


@bp.post("/")
@bp.input(schemas.AlbumCreate, arg_name="body")
@bp.output(envelope(schemas.Album), status_code=201,
           description="Created (`Location`: the album)")
def create_album(body: dict[str, t.Any]):
    """Create an album (name 1-200 characters, optional description)."""
    album = catalog.create_album(gallery().store, body["name"], body.get("description"))
    return created(album, "Album created successfully",
                   url_for("albums.get_album", album_id=album["_id"]))


@bp.get("/<album_id>")
@bp.output(envelope(schemas.AlbumDetail))
def get_album(album_id: str):
    """One album with its sections."""
    return ok(catalog.get_album(gallery().store, album_id), "Album retrieved successfully")


@bp.put("/<album_id>")
@bp.input(schemas.AlbumUpdate, arg_name="body")
@bp.output(envelope(schemas.Album))
def update_album(album_id: str, body: dict[str, t.Any]):
    """Change an album's name and/or description."""
    return ok(catalog.update_album(gallery().store, album_id, body),
              "Album updated successfully")


@bp.delete("/<album_id>")
@bp.output(envelope(schemas.AlbumDeleted))
def delete_album(album_id: str):
    """Delete an album; its images and sections are kept and unassigned from it."""
    return ok(catalog.delete_album(gallery().store, album_id), "Album deleted successfully")
