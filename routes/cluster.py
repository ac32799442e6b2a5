"""Re-clustering: regroup every face while keeping what users decided by hand."""

from __future__ import annotations

from flask import Blueprint
from flask import current_app
from flask import request

from errors import ValidationError
from routes.common import accepted
from routes.common import gallery
from routes.common import ok
from routes.common import parse_bool
from routes.common import parse_float
from routes.common import parse_int
from services import jobs
from services import recognition

bp = Blueprint("cluster", __name__)


def _run_recluster(*, allow_async: bool):
    body = request.get_json(silent=True) if request.is_json else None
    params = {**request.args.to_dict(), **(body if isinstance(body, dict) else {})}
    config = current_app.config
    eps = parse_float(params.get("tolerance", params.get("eps")), "tolerance",
                      config["DBSCAN_EPS"], low=0.01, high=1.0)
    min_samples = parse_int(params.get("min_samples"), "min_samples",
                            config["DBSCAN_MIN_SAMPLES"], minimum=1, maximum=1000)
    preserve = parse_bool(params.get("preserve_manual"), "preserve_manual", True)
    if parse_bool(params.get("async"), "async", False):
        if not allow_async:
            raise ValidationError("A background re-clustering is started with POST",
                                  details={"field": "async"})
        job = jobs.submit_recluster(gallery(), eps=eps, min_samples=min_samples,
                                    preserve_manual=preserve)
        return accepted(job, "Re-clustering queued")
    result = recognition.recluster(gallery(), eps=eps, min_samples=min_samples,
                                   preserve_manual=preserve)
    return ok(result, "Faces re-clustered successfully")


@bp.get("/")
def recluster_get():
    """Re-cluster every face (``tolerance`` = DBSCAN eps, ``min_samples``, ``preserve_manual``)."""
    return _run_recluster(allow_async=False)


@bp.post("/")
def recluster_post():
    """The same as GET, with parameters in the query string or a JSON body; ``async=true``
    answers 202 with a job at once."""
    return _run_recluster(allow_async=True)
