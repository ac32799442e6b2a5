"""Background jobs: an upload of many photos, or a re-clustering, run by a queue worker.

A job is a document in ``jobs``; the queue (:mod:`services.taskqueue`) carries only its id.
An upload job's files wait in ``job_files`` until each one's result is recorded in
``job_results``, so nothing the API acknowledged is lost and any worker can read them::

    receiving ──> queued ──> running ──> done | failed | cancelled
                    ^           │
                    └───────────┘  the runner died (recover) or its worker is stopping

One runner at a time holds a job (a lock named after it). It records each file's result
after the file is written, then counts it on the job and deletes its bytes. A file's result
is recorded once whoever tries (its ``_id`` is the job and position), so a resumed job skips
what was recorded, and a file written but not recorded comes back as a duplicate, never as
a second image. A runner names its process (``claimant``) and writes ``heartbeat_at`` every
``HEARTBEAT_SECONDS`` from a thread of its own; :func:`recover` takes a job back from a runner
whose process is gone (this machine: at once) or whose heartbeat is
``STALE_HEARTBEAT_SECONDS`` old (another machine), and fails it after ``MAX_ATTEMPTS`` runs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable

from errors import ConflictError
from errors import DatabaseConnectionError
from errors import GalleryError
from errors import ValidationError
from services import processes
from services import recognition
from services import storage
from services import upload
from services.photos import clean_filename
from services.photos import resolve_filing
from services.storage import Store

if t.TYPE_CHECKING:  # pragma: no cover
    from services.context import Gallery
    from services.ingest import Loader

log = logging.getLogger(__name__)

Doc = dict[str, t.Any]

STATUSES = ("receiving", "queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
#: A running job's process writes its heartbeat this often, whatever it is doing.
HEARTBEAT_SECONDS = 5.0
#: A heartbeat this old means the runner is gone. Nine missed beats, and longer than the
#: embedded store's 30 s write-lock wait, so a busy store never makes a live runner look dead;
#: short enough that a job of a machine that vanished resumes within a minute or two.
STALE_HEARTBEAT_SECONDS = 45.0
#: An upload that records no file for this long is stuck (dlib takes seconds a photo, a
#: minute for the largest with the CNN model): its runner stops beating and is replaced.
STALL_SECONDS = 600.0
#: Runs a job may start; a job whose runner died this often ends ``failed``.
MAX_ATTEMPTS = 3
#: A queued job absent from the queue this long is enqueued again (its message was lost).
REQUEUE_AFTER_SECONDS = 30.0
#: A job still ``receiving`` this long lost the request that was storing its files.
RECEIVING_STALE_SECONDS = 600.0
# A runner's lock never expires by age: recover releases a dead runner's lock by its run id.
_LOCK_TTL = 10 * 365 * 86400.0


# -- submitting --------------------------------------------------------------------------

def submit_upload(gallery: Gallery, files: Iterable[tuple[str, Loader]], *,
                  album_id: str | None = None, section_id: str | None = None) -> Doc:
    """Store the files as an upload job and queue it; returns the job.

    The album and section are checked first (404/400 before anything is stored).
    """
    store = gallery.store
    album, section = resolve_filing(store, album_id, section_id)
    files = list(files)
    job = _new_job("upload", total=len(files), files=[clean_filename(name) for name, _ in files],
                   params={"album_id": album or None, "section_id": section or None})
    store.insert_job(job)
    try:
        for position, (_, load) in enumerate(files):
            store.put_job_file(job["_id"], position, load())
    except BaseException:
        # Left as it is, the job would be failed by recover once RECEIVING_STALE_SECONDS old.
        with contextlib.suppress(GalleryError):
            store.delete_job_files(job["_id"])
            store.update_job(job["_id"], {"status": "failed", "finished_at": storage.now(),
                                          "error": "storing the files failed"})
        raise
    return _queue(gallery, job["_id"])


def submit_recluster(gallery: Gallery, *, eps: float, min_samples: int,
                     preserve_manual: bool, by: str = "", dry_run: bool = False,
                     moves_limit: int = 100, moves_offset: int = 0) -> Doc:
    """Queue a re-clustering (or its dry run, whose result is the diff); returns the job."""
    params: Doc = {"tolerance": eps, "min_samples": min_samples,
                   "preserve_manual": preserve_manual, "by": by or "job"}
    if dry_run:
        params.update(dry_run=True, moves_limit=moves_limit, moves_offset=moves_offset)
    job = _new_job("recluster", total=1, files=[], params=params)
    gallery.store.insert_job(job)
    return _queue(gallery, job["_id"])


def _new_job(kind: str, *, total: int, files: list[str], params: Doc) -> Doc:
    moment = storage.now()
    return {
        "_id": storage.new_id(), "kind": kind, "status": "receiving", "total": total,
        "processed": 0, "succeeded": 0, "failed": 0, "duplicates": 0, "faces_detected": 0,
        "persons_created": 0, "params": params, "files": files, "files_not_done": [],
        "result": None, "error": None, "created_at": moment, "queued_at": moment,
        "started_at": None, "finished_at": None, "run_started_at": None, "run_first_at": None,
        "run_start_processed": 0, "claimant": "", "run_id": "", "heartbeat_at": None,
        "cancel_requested": False, "attempts": 0,
    }


def _queue(gallery: Gallery, job_id: str) -> Doc:
    gallery.store.update_job(job_id, {"status": "queued", "queued_at": storage.now()})
    _enqueue(gallery, job_id)
    return get_job(gallery.store, job_id)


def _enqueue(gallery: Gallery, job_id: str) -> None:
    try:
        gallery.queue.enqueue(job_id)
    except Exception:  # noqa: BLE001 - the job is stored: recover enqueues it once it can
        log.exception("could not queue job %s; a worker's recovery will", job_id)


# -- reading -----------------------------------------------------------------------------

def get_job(store: Store, job_id: str) -> Doc:
    """A job with its progress and each processed file's result."""
    job = store.get_job(job_id)
    return view(job, store.job_results(job["_id"]))


def list_jobs(store: Store, *, status: str | None, limit: int, offset: int) -> Doc:
    """Jobs newest first, optionally of one status; without per-file results."""
    if status is not None and status not in STATUSES:
        raise ValidationError(f"'status' must be one of {', '.join(STATUSES)}",
                              details={"field": "status"})
    docs, total = store.jobs_page(status, limit, offset)
    return {"jobs": [view(doc) for doc in docs], "total": total, "limit": limit,
            "offset": offset}


def view(job: Doc, results: list[Doc] | None = None) -> Doc:
    """A job as the API shows it: ``percent`` done and ``eta_seconds`` left (None until a
    file of this run is done)."""
    total, processed, status = job["total"], job["processed"], job["status"]
    data = {
        "job_id": job["_id"], "kind": job["kind"], "status": status, "total": total,
        "processed": processed, "succeeded": job["succeeded"], "failed": job["failed"],
        "duplicates": job["duplicates"], "faces_detected": job["faces_detected"],
        "persons_created": job["persons_created"],
        "percent": 100.0 if status == "done" else round(100.0 * processed / max(total, 1), 1),
        "eta_seconds": _eta(job), "params": job["params"],
        "cancel_requested": job["cancel_requested"], "files_not_done": job["files_not_done"],
        "error": job["error"], "attempts": job["attempts"], "claimant": job["claimant"],
        "created_at": job["created_at"], "started_at": job["started_at"],
        "finished_at": job["finished_at"], "heartbeat_at": job["heartbeat_at"],
    }
    if job["kind"] == "recluster":
        data["result"] = job["result"]
    if results is not None:
        data["results"] = [doc["result"] for doc in results]
    return data


def _eta(job: Doc) -> float | None:
    if job["status"] in FINISHED:
        return 0.0
    done = job["processed"] - job["run_start_processed"]
    if job["status"] != "running" or done <= 0:
        return None
    # The first file of a run also pays for loading the dlib models: the rate is measured
    # from its end once a second file is done.
    since, files = ((job["run_started_at"], done) if done == 1 or not job.get("run_first_at")
                    else (job["run_first_at"], done - 1))
    seconds_a_file = (storage.now() - since).total_seconds() / files
    return round(seconds_a_file * (job["total"] - job["processed"]), 1)


# -- cancelling --------------------------------------------------------------------------

def cancel_job(gallery: Gallery, job_id: str) -> Doc:
    """Cancel a queued job at once, or ask its runner to stop after the current file.

    :raise ConflictError: the job is finished, still being received, or a running
        re-clustering (which cannot stop half way).
    """
    store = gallery.store
    job = store.get_job(job_id)
    job_id = job["_id"]
    if job["status"] == "queued":
        holder = f"cancel:{storage.new_id()}"
        # The runner's lock: a worker claiming the job at this moment cannot also start it.
        if store.acquire_lock(_lock_name(job_id), holder, 60.0):
            try:
                job = store.get_job(job_id)
                if job["status"] == "queued":
                    _close(store, job, "cancelled")
                    return get_job(store, job_id)
            finally:
                store.release_lock(_lock_name(job_id), holder)
        job = store.get_job(job_id)
    if job["status"] in FINISHED or job["status"] == "receiving":
        raise ConflictError(f"The job is {job['status']}; only queued or running jobs can be "
                            "cancelled", details={"job_id": job_id, "status": job["status"]})
    if job["kind"] == "recluster":
        raise ConflictError("A running re-clustering cannot be stopped half way",
                            details={"job_id": job_id, "status": job["status"]})
    store.update_job(job_id, {"cancel_requested": True})
    return get_job(store, job_id)


# -- running -----------------------------------------------------------------------------

def run_job(gallery: Gallery, job_id: str, *, should_stop: Callable[[], bool] = lambda: False,
            before_record: Callable[[int, Doc], None] | None = None) -> str | None:
    """Run (or resume) a queued job; returns how it ended, None when it was not ours to run.

    ``should_stop`` is asked after each file (the worker is stopping: the job goes back to
    the queue). ``before_record(position, result)`` is called when a file is written, before
    its result is recorded (tests stop or crash a job there).
    """
    store = gallery.store
    claimed = _claim(store, job_id)
    if claimed is None:
        return None
    job, run_id = claimed
    # A re-clustering is one long step: only an upload is expected to record files often.
    stall = STALL_SECONDS if job["kind"] == "upload" else None
    with _Heartbeat(store, job_id, run_id, stall_seconds=stall) as beat:
        try:
            if job["kind"] == "recluster":
                return _run_recluster(gallery, job, run_id)
            return _run_upload(gallery, job, run_id, beat, should_stop, before_record)
        except DatabaseConnectionError:
            raise  # nothing can be recorded: the stale heartbeat hands the job back later
        except GalleryError as err:
            log.warning("job %s failed: %s", job_id, err.message)
            return _end(store, job_id, run_id, "failed", error=err.message)
        except Exception as err:
            log.exception("job %s failed", job_id)
            return _end(store, job_id, run_id, "failed", error=f"internal error: {err!r}")


def _claim(store: Store, job_id: str) -> tuple[Doc, str] | None:
    job = store.find_job(job_id)
    if job is None or job["status"] != "queued":
        return None  # finished, cancelled, or a second message for a job already running
    run_id = storage.new_id()
    if not store.acquire_lock(_lock_name(job_id), run_id, _LOCK_TTL):
        return None
    job = store.find_job(job_id)
    if job is None or job["status"] != "queued":
        store.release_lock(_lock_name(job_id), run_id)
        return None
    counts = _counts(store.job_results(job_id))
    moment = storage.now()
    job = store.update_job(job_id, {
        **counts, "status": "running", "claimant": processes.claimant(), "run_id": run_id,
        "heartbeat_at": moment, "run_started_at": moment, "run_first_at": None,
        "run_start_processed": counts["processed"], "started_at": job["started_at"] or moment,
    }, {"attempts": 1})
    return (job, run_id) if job is not None else None


def _run_upload(gallery: Gallery, job: Doc, run_id: str, beat: _Heartbeat,
                should_stop: Callable[[], bool],
                before_record: Callable[[int, Doc], None] | None) -> str | None:
    store, job_id, names = gallery.store, job["_id"], job["files"]
    if job["cancel_requested"]:  # asked for while the job changed hands
        return _end(store, job_id, run_id, "cancelled")
    params = job["params"]
    album, section = resolve_filing(store, params["album_id"], params["section_id"])
    recorded = {doc["position"] for doc in store.job_results(job_id)}
    if recorded:
        # Only the last recorded file can still be stored: a crash came before its delete.
        store.delete_job_file(job_id, max(recorded))
    positions = [p for p in range(job["total"]) if p not in recorded]

    def loader(position: int) -> Loader:
        def load() -> bytes:
            data = store.read_job_file(job_id, position)
            if data is None:
                raise GalleryError("The uploaded bytes of this file are missing")
            return data
        return load

    ending = "done"
    files = ((names[p], loader(p)) for p in positions)
    with contextlib.closing(upload.ingest_files(gallery, files, album=album,
                                                section=section)) as results:
        for position, result in zip(positions, results, strict=False):
            if before_record is not None:
                before_record(position, result)
            first = position == positions[0]
            current = _record(store, job_id, position, result,
                              {"run_first_at": storage.now()} if first else {})
            beat.progress()
            if current is None or current["run_id"] != run_id or beat.lost.is_set():
                return None  # deleted (reset), or another runner took the job over
            if current["cancel_requested"]:
                ending = "cancelled"
                break
            if should_stop() and position != positions[-1]:
                ending = "queued"
                break
    if ending == "queued":
        store.update_job(job_id, {"status": "queued", "claimant": "", "run_id": "",
                                  "queued_at": storage.now()}, {"attempts": -1})
        store.release_lock(_lock_name(job_id), run_id)
        _enqueue(gallery, job_id)
        return ending
    return _end(store, job_id, run_id, ending)


def _record(store: Store, job_id: str, position: int, result: Doc, fields: Doc
            ) -> Doc | None:
    """Record a written file's result, count it, drop its bytes; returns the job after."""
    fields = {**fields, "heartbeat_at": storage.now()}
    if store.record_job_result(job_id, position, result):
        job = store.update_job(job_id, fields, _counts([{"result": result}]))
    else:  # a runner taken for dead recorded it: it is counted when the job ends
        job = store.update_job(job_id, fields)
    store.delete_job_file(job_id, position)
    return job


def _run_recluster(gallery: Gallery, job: Doc, run_id: str) -> str:
    params = job["params"]
    # Jobs queued before the threshold was renamed say "eps".
    result = recognition.recluster(gallery, eps=params.get("tolerance", params.get("eps")),
                                   min_samples=params["min_samples"],
                                   preserve_manual=params["preserve_manual"],
                                   by=params.get("by", "job"),
                                   dry_run=params.get("dry_run", False),
                                   moves_limit=params.get("moves_limit", 100),
                                   moves_offset=params.get("moves_offset", 0))
    return _end(gallery.store, job["_id"], run_id, "done", result=result)


def _end(store: Store, job_id: str, run_id: str, status: str, **fields: t.Any) -> str:
    job = store.find_job(job_id)
    if job is not None and job["run_id"] == run_id:
        _close(store, job, status, **fields)
    store.release_lock(_lock_name(job_id), run_id)
    return status


def _close(store: Store, job: Doc, status: str, **fields: t.Any) -> None:
    """Finish a job: exact counts from its results, the files not done named, bytes gone."""
    if job["kind"] == "upload":
        results = store.job_results(job["_id"])
        recorded = {doc["position"] for doc in results}
        fields.update(_counts(results))
        fields["files_not_done"] = [name for p, name in enumerate(job["files"])
                                    if p not in recorded]
        store.delete_job_files(job["_id"])
    elif status == "done":
        fields.update(processed=1, succeeded=1)
    moment = storage.now()
    store.update_job(job["_id"], {**fields, "status": status, "finished_at": moment,
                                  "heartbeat_at": moment})


def _counts(results: list[Doc]) -> Doc:
    summary = upload.summarise([doc["result"] for doc in results])
    return {"processed": summary["total_images"], "succeeded": summary["successful_uploads"],
            "failed": summary["failed_uploads"], "duplicates": summary["duplicates"],
            "faces_detected": summary["total_faces_detected"],
            "persons_created": summary["persons_created"]}


def _lock_name(job_id: str) -> str:
    return f"job:{job_id}"


class _Heartbeat:
    """Writes the job's ``heartbeat_at`` from a thread while it runs; notices a takeover."""

    def __init__(self, store: Store, job_id: str, run_id: str, *,
                 stall_seconds: float | None) -> None:
        self.store, self.job_id, self.run_id = store, job_id, run_id
        self.stall_seconds = stall_seconds
        self.lost = threading.Event()
        self._done = threading.Event()
        self._progress_at = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}",
                                        daemon=True)

    def progress(self) -> None:
        self._progress_at = time.monotonic()

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(HEARTBEAT_SECONDS):
            stalled = time.monotonic() - self._progress_at
            if self.stall_seconds is not None and stalled > self.stall_seconds:
                log.error("job %s recorded nothing for %.0f s; leaving it to another runner",
                          self.job_id, stalled)
                return
            try:
                job = self.store.update_job(self.job_id, {"heartbeat_at": storage.now()})
            except GalleryError as err:  # a late beat is fine; a dead store stops the job
                log.warning("job %s: heartbeat not written: %s", self.job_id, err.message)
                continue
            if job is None or job["run_id"] != self.run_id:
                self.lost.set()
                return


# -- recovering --------------------------------------------------------------------------

def recover(gallery: Gallery, *, dry_run: bool = False) -> Doc:
    """Take back jobs whose runner died, queue jobs whose message was lost, and fail jobs
    whose files never finished arriving; returns the job ids of each. With ``dry_run``
    the ids are those it would act on, and nothing is written or queued."""
    store = gallery.store
    moment = storage.now()
    report: dict[str, list[str]] = {"resumed": [], "failed": [], "requeued": [],
                                    "abandoned": []}
    for job in store.jobs_with_status("running"):
        if not _runner_is_gone(job, moment):
            continue
        if not dry_run:
            store.release_lock(_lock_name(job["_id"]), job["run_id"])
        job = store.find_job(job["_id"])  # with its file names
        if job is None:
            continue
        if job["attempts"] >= MAX_ATTEMPTS:
            if not dry_run:
                _close(store, job, "failed", error=f"its worker stopped during each of "
                                                   f"{job['attempts']} runs")
            report["failed"].append(job["_id"])
            continue
        if not dry_run:
            store.update_job(job["_id"], {"status": "queued", "claimant": "", "run_id": "",
                                          "queued_at": moment})
            _enqueue(gallery, job["_id"])
        report["resumed"].append(job["_id"])
    waiting = gallery.queue.pending_job_ids()
    for job in store.jobs_with_status("queued"):
        age = (moment - job["queued_at"]).total_seconds()
        if job["_id"] not in waiting and age > REQUEUE_AFTER_SECONDS:
            report["requeued"].append(job["_id"])
            if not dry_run:
                _enqueue(gallery, job["_id"])
    for job in store.jobs_with_status("receiving"):
        job = store.find_job(job["_id"])
        if job and (moment - job["created_at"]).total_seconds() > RECEIVING_STALE_SECONDS:
            if not dry_run:
                _close(store, job, "failed",
                       error="the request storing its files was interrupted")
            report["abandoned"].append(job["_id"])
    return report


def _runner_is_gone(job: Doc, moment: t.Any) -> bool:
    if processes.claimant_is_gone(job["claimant"]):
        return True
    beat = job["heartbeat_at"] or job["run_started_at"] or job["created_at"]
    return (moment - beat).total_seconds() > STALE_HEARTBEAT_SECONDS
