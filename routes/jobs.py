"""Jobs: background uploads and re-clusterings, their progress, and cancelling them."""

from __future__ import annotations

from flask import Blueprint
from flask import request

from routes.common import gallery
from routes.common import ok
from routes.common import pagination
from services import jobs

bp = Blueprint("jobs", __name__)


@bp.get("/")
def list_jobs():
    """Jobs newest first; ``status`` filters (queued, running, done, failed, cancelled)."""
    limit, offset = pagination()
    result = jobs.list_jobs(gallery().store, status=request.args.get("status") or None,
                            limit=limit, offset=offset)
    return ok(result, "Jobs retrieved successfully")


@bp.get("/<job_id>")
def get_job(job_id: str):
    """A job's status, ``percent``, ``eta_seconds`` and each processed file's result."""
    return ok(jobs.get_job(gallery().store, job_id), "Job retrieved successfully")


@bp.delete("/<job_id>")
def cancel_job(job_id: str):
    """Cancel a queued job, or stop a running upload after its current file (409 once done)."""
    job = jobs.cancel_job(gallery(), job_id)
    message = "Job cancelled" if job["status"] == "cancelled" else "Cancellation requested"
    return ok(job, message)
