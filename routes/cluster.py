"""Re-clustering: regroup every face while keeping what users decided by hand; preview it
(dry run), list the runs, and roll one back."""

from __future__ import annotations

import typing as t

from apiflask import APIBlueprint
from flask import current_app
from flask import request

from errors import ValidationError
from routes import access
from routes import schemas
from routes.common import accepted
from routes.common import gallery
from routes.common import ok
from routes.schemas import envelope
from services import jobs
from services import recognition
from services import rollback
from services import runs

bp = APIBlueprint("cluster", __name__, tag="Re-clustering")

CONFLICT = {409: "a re-clustering or a rollback is already running"}


@bp.post("/")
@bp.input(schemas.ReclusterPostQuery, location="query", arg_name="query")
@bp.input(schemas.ReclusterBody, arg_name="body")
@bp.output(envelope(schemas.Reclustered), description="Re-clustered")
@bp.doc(responses={**CONFLICT, 202: {
    "description": "`async`: a re-clustering job (`Location`: the job)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobEnvelope"}}}}})
def recluster_post(query: dict[str, t.Any], body: dict[str, t.Any]):
    """Re-cluster every face, keeping faces moved by hand.

    Parameters in the query string or a JSON body (the body wins); `async=true` answers 202
    with a job at once. Each run is recorded and numbered (`run_number`; `GET /cluster/runs`)
    and can be rolled back. `dry_run=true` writes nothing and answers what would change:
    persons created, merged, split, deleted, named persons affected, `churn`, and the faces
    moved, paged by `moves_limit` (default 100) and `moves_offset`.
    """
    return _run_recluster({**query, **body}, allow_async=True)


@bp.get("/")
@bp.input(schemas.ReclusterQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.Reclustered), description="Re-clustered")
@bp.doc(responses=CONFLICT)
def recluster_get(query: dict[str, t.Any]):
    """Re-cluster by GET (unsafe; kept for compatibility): use POST.

    A GET that changes data can be triggered by any web page a user visits (an `<img src>`);
    when API keys are on it needs one like every other change. `async` is refused here.
    """
    # `async` is not in GET's schema (so not documented there) but must not be ignored.
    return _run_recluster({**query, "run_async": "async" in request.args}, allow_async=False)


def _run_recluster(params: dict[str, t.Any], *, allow_async: bool):
    config = current_app.config
    tolerance = params.get("tolerance", params.get("eps", config["DBSCAN_EPS"]))
    min_samples = params.get("min_samples", config["DBSCAN_MIN_SAMPLES"])
    preserve = params.get("preserve_manual", True)
    preview = {"dry_run": bool(params.get("dry_run", False)),
               "moves_limit": params.get("moves_limit", 100),
               "moves_offset": params.get("moves_offset", 0)}
    if params.get("run_async"):
        if not allow_async:
            raise ValidationError("A background re-clustering is started with POST",
                                  details={"field": "async"})
        job = jobs.submit_recluster(gallery(), eps=tolerance, min_samples=min_samples,
                                    preserve_manual=preserve, by=access.caller(), **preview)
        return accepted(job, "Re-clustering queued")
    result = recognition.recluster(gallery(), eps=tolerance, min_samples=min_samples,
                                   preserve_manual=preserve, by=access.caller(), **preview)
    if preview["dry_run"]:
        return ok(result, "Dry run: nothing was changed")
    return ok(result, "Faces re-clustered successfully")


@bp.get("/runs")
@bp.input(schemas.RunListQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.RunPage))
def list_runs(query: dict[str, t.Any]):
    """Re-clustering runs and rollbacks, newest first: number, parameters, who, when, summary."""
    result = runs.list_runs(gallery().store, limit=query["limit"], offset=query["offset"])
    return ok(result, "Runs retrieved successfully")


@bp.get("/runs/<int:number>")
@bp.input(schemas.RunQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.RunDetail))
@bp.doc(responses={404: "no run has this number"})
def get_run(number: int, query: dict[str, t.Any]):
    """One run: its summary and diff, and the faces it moved (by face id, paged by
    `moves_limit`/`moves_offset`)."""
    result = runs.get_run(gallery().store, number, moves_limit=query["moves_limit"],
                          moves_offset=query["moves_offset"])
    return ok(result, "Run retrieved successfully")


@bp.post("/runs/<int:number>/rollback")
@bp.input(schemas.RollbackQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.RolledBack), description="Rolled back")
@bp.doc(responses={404: "no run has this number", 409: (
    "faces changed since the run (`details.conflicts`, `details.total`; retry with "
    "`force=true`), the run is a rollback, was rolled back already or is running, or a "
    "re-clustering is running")})
def rollback_run(number: int, query: dict[str, t.Any]):
    """Undo a re-clustering run: every face it moved goes back to its person, persons it
    deleted come back with their ids, names and fields, persons it created go once empty.

    Recorded as a run of kind `rollback`. A run is rolled back once (again: 409).
    """
    result = rollback.undo_run(gallery().store, number, force=query["force"], by=access.caller())
    return ok(result, f"Run {number} rolled back")
