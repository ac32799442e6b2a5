"""The service itself: description, health, statistics and reset."""

from __future__ import annotations

from flask import Blueprint
from flask import current_app
from flask import request

from errors import DatabaseConnectionError
from errors import ValidationError
from routes.common import error_response
from routes.common import gallery
from routes.common import ok
from routes.common import parse_bool
from services import catalog

bp = Blueprint("stats", __name__)

ENDPOINTS = {
    "images": ["POST /images/upload", "POST /images/upload-multiple", "GET /images/",
               "GET /images/{id}", "GET /images/{id}/file", "GET /images/{id}/thumbnail",
               "PUT /images/{id}", "DELETE /images/{id}", "POST /images/search-by-image"],
    "persons": ["GET /persons/", "GET /persons/{id}", "PUT /persons/{id}/rename",
                "GET /persons/{id}/thumbnail", "PUT /persons/{id}/merge"],
    "faces": ["GET /faces/{id}", "GET /faces/{id}/info", "PUT /faces/{id}/move",
              "PUT /faces/{id}/move-to-new"],
    "albums": ["GET /albums/", "POST /albums/", "GET /albums/{id}", "PUT /albums/{id}",
               "DELETE /albums/{id}"],
    "sections": ["GET /sections/", "POST /sections/", "GET /sections/{id}",
                 "PUT /sections/{id}", "DELETE /sections/{id}"],
    "cluster": ["GET /cluster/", "POST /cluster/", "POST /cluster/?async=true"],
    "jobs": ["POST /images/upload-multiple?async=true", "GET /jobs/", "GET /jobs/{id}",
             "DELETE /jobs/{id}"],
    "system": ["GET /", "GET /health", "GET /stats/", "DELETE /reset"],
}


@bp.get("/")
def describe_api():
    """Name, version and endpoints of this API."""
    return ok({
        "name": "Face Gallery API",
        "version": current_app.config["APP_VERSION"],
        "description": "Upload photos; faces are found, grouped into persons and searchable.",
        "docs": "docs/api.md",
        "endpoints": ENDPOINTS,
    }, "Face Gallery API")


@bp.get("/health")
def health():
    """Liveness and database reachability for load balancers (200 or 503)."""
    try:
        reachable = gallery().store.ping()
    except DatabaseConnectionError:
        reachable = False
    data = {"status": "healthy" if reachable else "unhealthy",
            "database": {"reachable": reachable, "backend": gallery().backend_name},
            "version": current_app.config["APP_VERSION"]}
    if not reachable:
        return error_response("Database connection failed", "DatabaseConnectionError", 503,
                              details=data)
    return ok(data, "Service is healthy")


@bp.get("/stats/")
def get_stats():
    """Counts of persons, images, faces, albums and sections, with coverage ratios."""
    return ok(catalog.statistics(gallery().store), "Statistics retrieved successfully")


@bp.delete("/reset")
def reset_gallery():
    """Delete everything; needs ``?confirm=true`` or a JSON body ``{"confirm": true}``."""
    body = request.get_json(silent=True) if request.get_data(cache=True) else None
    confirmed = parse_bool(request.args.get("confirm"), "confirm", False)
    if isinstance(body, dict) and body.get("confirm") is True:
        confirmed = True
    if not confirmed:
        raise ValidationError(
            "Reset deletes every image, face, person, album and section. "
            "Confirm with ?confirm=true or a JSON body {\"confirm\": true}.",
            details={"confirm": "required"})
    return ok(catalog.reset(gallery().store), "Database reset successfully")
