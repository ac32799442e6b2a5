"""Each serving process's upkeep thread: its heartbeat, and repair of what dead ones left.

Started explicitly by what serves (gunicorn's ``post_worker_init``, ``python app.py``, the
jobs worker), never at import nor by the app factory, so tests and scripts run none unless
they ask. Every ``processes.BEAT_SECONDS`` it records that this process runs
(:meth:`Store.beat`), which is how processes of other machines tell that its claims are alive;
every ``REPAIR_INTERVAL_SECONDS`` it runs :func:`repair.background_pass`, so an upload or delete
whose process was killed is undone or finished within seconds, not at the next start.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

from errors import GalleryError
from services import processes
from services import repair
from services import storage

if t.TYPE_CHECKING:  # pragma: no cover
    from services.context import Gallery

log = logging.getLogger(__name__)


def start(gallery: Gallery) -> Upkeep | None:
    """Start this process's upkeep thread; None when ``REPAIR_INTERVAL_SECONDS`` is 0."""
    interval = float(gallery.settings["REPAIR_INTERVAL_SECONDS"])
    if interval <= 0:
        return None
    upkeep = Upkeep(gallery, repair_seconds=interval)
    upkeep.start()
    return upkeep


class Upkeep:
    """A daemon thread beating every ``beat_seconds`` and repairing every ``repair_seconds``."""

    def __init__(self, gallery: Gallery, *, repair_seconds: float,
                 beat_seconds: float = processes.BEAT_SECONDS) -> None:
        self.gallery = gallery
        self.repair_seconds = repair_seconds
        self.beat_seconds = beat_seconds
        #: Recorded with each beat: a claim older than this process is not its own, though
        #: it may carry the same pid (:func:`processes.owner_is_gone`).
        self.started_at = storage.now()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upkeep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current step (tests; a serving process just exits)."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        next_repair = time.monotonic() + self.repair_seconds
        while True:
            self._step(self.beat)
            if time.monotonic() >= next_repair:
                self._step(self.repair)
                next_repair = time.monotonic() + self.repair_seconds
            wait = min(self.beat_seconds, max(0.0, next_repair - time.monotonic()))
            if self._stopping.wait(wait):
                return

    def beat(self) -> None:
        """Record that this process runs."""
        self.gallery.store.beat(processes.claimant(), self.started_at)

    def repair(self) -> t.Any:
        """One background repair pass; its report, or None when nothing was abandoned."""
        report = repair.background_pass(self.gallery.store)
        if report is not None and any(repair.counts(report).values()):
            log.warning("repaired work a dead process left: %s", report)
        return report

    def _step(self, step: t.Callable[[], t.Any]) -> None:
        try:
            step()
        except GalleryError as err:  # the database is away: the next step tries again
            log.warning("upkeep %s skipped: %s", step.__name__, err.message)
        except Exception:  # noqa: BLE001 - logged in full; the thread must outlive one failure
            log.exception("upkeep %s failed", step.__name__)
