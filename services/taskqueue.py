"""The job queue: a huey instance built from the settings, its tasks, and its consumer.

The queue only carries job ids; what a job is and how far it got lives in the database
(:mod:`services.jobs`), so the API and every worker see the same thing and a lost message
costs nothing but a delay (:func:`jobs.recover` enqueues the job again). The queue is Redis
when ``REDIS_URL`` is set (workers on any number of machines), else a SQLite file in
``DATA_DIR`` (workers on this machine). Nothing is built at import: each process opens its own
queue on first use (``Gallery.queue``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import typing as t

from huey import RedisHuey
from huey import SqliteHuey
from huey import crontab

from services import jobs
from services import repair

if t.TYPE_CHECKING:  # pragma: no cover
    from huey import Huey

    from services.context import Gallery

log = logging.getLogger(__name__)

#: An idle worker polls the SQLite queue at least this often (Redis wakes it at once).
MAX_POLL_SECONDS = 1.0
#: A stopping worker waits this long for its jobs to reach the end of a file.
SHUTDOWN_SECONDS = 30.0


def queue_file(settings: t.Mapping[str, t.Any]) -> str:
    """Where the SQLite queue lives when no ``REDIS_URL`` is set."""
    return os.path.join(settings["DATA_DIR"], "queue.sqlite3")


class JobQueue:
    """This process's huey instance with the gallery's tasks registered on it."""

    def __init__(self, gallery: Gallery) -> None:
        settings = gallery.settings
        # One queue per database: two galleries may share a Redis server.
        name = f"face_gallery_{settings['DATABASE_NAME']}"
        self.huey: Huey
        if settings["REDIS_URL"]:
            self.huey = RedisHuey(name, url=settings["REDIS_URL"], results=False)
        else:
            os.makedirs(settings["DATA_DIR"], exist_ok=True)
            self.huey = SqliteHuey(name, filename=queue_file(settings), results=False)
        self._stopping = threading.Event()

        # Tasks are named explicitly: the API and the workers must agree on the names.
        @self.huey.task(name="run_job")
        def run_job(job_id: str) -> None:
            jobs.run_job(gallery, job_id, should_stop=self._stopping.is_set)

        # Every minute on each worker: a job whose runner died is taken up again.
        @self.huey.periodic_task(crontab(), name="recover_jobs")
        def recover_jobs() -> None:
            report = jobs.recover(gallery)
            if any(report.values()):
                log.warning("jobs recovered: %s", report)

        self._run_job = run_job

    @property
    def immediate(self) -> bool:
        """True when enqueued jobs run at once in the caller (huey's immediate mode, tests)."""
        return bool(self.huey.immediate)

    @immediate.setter
    def immediate(self, value: bool) -> None:
        self.huey.immediate = value

    def enqueue(self, job_id: str) -> None:
        """Ask a worker to run (or resume) a job."""
        self._run_job(job_id)

    def pending_job_ids(self) -> set[str]:
        """Ids of the jobs waiting in the queue (not those a worker has taken)."""
        return {task.args[0] for task in self.huey.pending()
                if task.name == "run_job" and task.args}

    def consume(self, workers: int = 1) -> None:
        """Run jobs until SIGTERM (each job stops at the end of its current file and is put
        back in the queue) or SIGINT (stop now; the jobs are recovered later)."""
        consumer = self.huey.create_consumer(
            workers=workers, worker_type="thread", periodic=True, max_delay=MAX_POLL_SECONDS,
            graceful_signal="TERM", shutdown_timeout=SHUTDOWN_SECONDS)
        # The consumer's stop flag is what running jobs watch between files.
        self._stopping = consumer.stop_flag
        consumer.run()

    def close(self) -> None:
        self.huey.storage.close()


def run_worker(gallery: Gallery, *, workers: int = 1, stop_with_parent: bool = False) -> None:
    """Repair, recover the jobs a dead worker left, then run jobs until stopped."""
    report = repair.run(gallery.store,
                        blob_grace_seconds=gallery.settings["BLOB_SWEEP_GRACE_SECONDS"])
    if any(report.values()):
        log.warning("repaired half-written work: %s", report)
    recovered = jobs.recover(gallery)
    if any(recovered.values()):
        log.warning("jobs recovered: %s", recovered)
    if stop_with_parent:
        _stop_when_orphaned()
    log.info("jobs worker %d started: %d at a time, queue %s", os.getpid(), workers,
             "redis" if gallery.settings["REDIS_URL"] else queue_file(gallery.settings))
    gallery.queue.consume(workers)


def _stop_when_orphaned(interval: float = 1.0) -> None:
    # A worker started by the server must not outlive it, even when the server is killed
    # before it can stop the worker: the parent's pid changes when it dies.
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.warning("the server that started this worker is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
