"""The service itself: description, health, statistics and reset."""

from __future__ import annotations

import re
import typing as t

from apiflask import APIBlueprint
from flask import current_app
from flask import url_for

from errors import DatabaseConnectionError
from routes import schemas
from routes.common import error_response
from routes.common import gallery
from routes.common import ok
from routes.schemas import envelope
from services import catalog
from services import quality

bp = APIBlueprint("stats", __name__, tag="System")

#: Routes of the docs page and the contract itself, left out of the endpoint list.
_OWN_ROUTES = {"openapi", "static", "docs_assets"}


@bp.get("/")
@bp.output(envelope(schemas.About))
def describe_api():
    """Name, version, the docs page, the OpenAPI document and every endpoint."""
    return ok({
        "name": "Face Gallery API",
        "version": current_app.config["APP_VERSION"],
        "description": "Upload photos; faces are found, grouped into persons and searchable.",
        "docs": url_for("openapi.docs"),
        "openapi": url_for("openapi.spec"),
        "endpoints": endpoint_list(),
    }, "Face Gallery API")


def endpoint_list() -> dict[str, list[str]]:
    """``{resource: ["METHOD /path", ...]}`` read off the app's routes, so it cannot drift."""
    listed: dict[str, list[str]] = {}
    for rule in current_app.url_map.iter_rules():
        resource = rule.endpoint.split(".")[0]
        if resource in _OWN_ROUTES:
            continue
        path = re.sub(r"<(?:[^<:]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            listed.setdefault("system" if resource == "stats" else resource, []).append(
                f"{method} {path}")
    return listed


@bp.get("/health")
@bp.output(envelope(schemas.Health), description="The database answers")
@bp.doc(responses={503: "the database cannot be reached (the same data in "
                                     "`details`)"})
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
@bp.output(envelope(schemas.Stats))
def get_stats():
    """Counts of persons, images, faces, albums and sections, with coverage ratios."""
    return ok(catalog.statistics(gallery().store), "Statistics retrieved successfully")


@bp.get("/stats/quality")
@bp.input(schemas.QualityQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.Quality))
def get_quality(query: dict[str, t.Any]):
    """Quality figures of the people data: unassigned faces, persons of one face, same-photo
    conflicts, likely duplicate persons, per-person spread, churn of the last re-clustering
    and the share of manual assignments. Kept while the gallery is unchanged; `max_age`
    accepts figures that many seconds old although it changed."""
    return ok(quality.quality_figures(gallery(), limit=query["limit"],
                                      max_age=query["max_age"]),
              "Quality figures retrieved successfully")


@bp.delete("/reset")
@bp.input(schemas.ResetQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.ResetDone))
@bp.doc(responses={403: "production without ALLOW_RESET=true",
                   409: "another reset is running, or uploads being written did not finish "
                        "within 10 s (nothing was deleted)"})
def reset_gallery(query: dict[str, t.Any]):
    """Delete everything; needs `?confirm=true` (the schema refuses anything else)."""
    return ok(catalog.reset(gallery().store), "Database reset successfully")
