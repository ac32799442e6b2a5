"""Re-clustering: regroup every face while keeping what users decided by hand."""

from __future__ import annotations

import typing as t

from apiflask import APIBlueprint
from flask import current_app
from flask import request

from errors import ValidationError
from routes import schemas
from routes.common import accepted
from routes.common import gallery
from routes.common import ok
from routes.schemas import envelope
from services import jobs
from services import recognition

bp = APIBlueprint("cluster", __name__, tag="Re-clustering")

CONFLICT = {409: "a re-clustering is already running"}


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
    with a job at once.
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
    if params.get("run_async"):
        if not allow_async:
            raise ValidationError("A background re-clustering is started with POST",
                                  details={"field": "async"})
        job = jobs.submit_recluster(gallery(), eps=tolerance, min_samples=min_samples,
                                    preserve_manual=preserve)
        return accepted(job, "Re-clustering queued")
    result = recognition.recluster(gallery(), eps=tolerance, min_samples=min_samples,
                                   preserve_manual=preserve)
    return ok(result, "Faces re-clustered successfully")
