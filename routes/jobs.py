"""Jobs: background uploads and re-clusterings, their progress, and cancelling them."""

from __future__ import annotations

import typing as t

from apiflask import APIBlueprint

from routes import schemas
from routes.common import gallery
from routes.common import ok
from routes.schemas import envelope
from services import jobs

bp = APIBlueprint("jobs", __name__, tag="Jobs")


@bp.get("/")
@bp.input(schemas.JobListQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.JobPage))
def list_jobs(query: dict[str, t.Any]):
    """Jobs newest first, without per-file results; `status` filters."""
    result = jobs.list_jobs(gallery().store, status=query.get("status"),
                            limit=query["limit"], offset=query["offset"])
    return ok(result, "Jobs retrieved successfully")


@bp.get("/<job_id>")
@bp.output(envelope(schemas.Job))
def get_job(job_id: str):
    """A job's status, `percent`, `eta_seconds` and each processed file's result."""
    return ok(jobs.get_job(gallery().store, job_id), "Job retrieved successfully")


@bp.delete("/<job_id>")
@bp.output(envelope(schemas.Job))
@bp.doc(responses={409: "the job is finished, still receiving, or a running re-clustering"})
def cancel_job(job_id: str):
    """Cancel a queued job, or stop a running upload after its current file."""
    job = jobs.cancel_job(gallery(), job_id)
    message = "Job cancelled" if job["status"] == "cancelled" else "Cancellation requested"
    return ok(job, message)
