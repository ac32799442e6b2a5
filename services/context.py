"""Per-process handles: the store, the face engine, the embedding index, the job queue.

A :class:`Gallery` is built by the app factory (or by a script) from the validated settings.
Each handle opens on first use, and again after a fork, because pymongo clients and SQLite
connections must not cross into a gunicorn worker, and the dlib models are only worth loading
in processes that detect faces.
"""

from __future__ import annotations

import logging
import os
import threading
import typing as t
from collections.abc import Mapping

from errors import ConfigError
from services import blobs
from services import storage
from services.storage import Store
from services.storage import open_store

if t.TYPE_CHECKING:  # pragma: no cover
    from services.face_engine import FaceEngine
    from services.face_index import FaceIndex
    from services.ingest import IngestPool
    from services.taskqueue import JobQueue


log = logging.getLogger(__name__)


def check_settings(settings: Mapping[str, t.Any]) -> None:
    """Find at start-up what opening the handles would find only on first use: a malformed
    ``MONGODB_URI``, or a ``DATA_DIR`` that cannot be created or written (the embedded store
    and the SQLite job queue live there). Connects to nothing.

    :raise ConfigError: naming the variable.
    """
    storage.check_uri(settings["MONGODB_URI"])
    if settings.get("BLOB_STORE") == "gridfs" and not settings["MONGODB_URI"]:
        raise ConfigError("BLOB_STORE: gridfs needs MongoDB (MONGODB_URI); the embedded store "
                          "keeps blobs as files or inline")
    if settings["MONGODB_URI"] and settings["REDIS_URL"]:
        return  # nothing lives in DATA_DIR
    data_dir = settings["DATA_DIR"]
    if not data_dir:
        raise ConfigError("DATA_DIR: must not be empty")
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"DATA_DIR: cannot create {data_dir!r}: {err.strerror}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"DATA_DIR: {data_dir!r} is not writable by this user")


class Gallery:
    """Settings plus lazily opened handles, one set per process."""

    def __init__(self, settings: Mapping[str, t.Any], *, store: Store | None = None) -> None:
        self.settings = dict(settings)
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._store = store
        self._injected_store = store is not None
        self._blobs_attached = False
        self._engine: FaceEngine | None = None
        self._ingest_pool: IngestPool | None = None
        self._index: FaceIndex | None = None
        self._queue: JobQueue | None = None
        #: Figures derived from this process's index and kept while it is unchanged
        #: (:mod:`services.quality`): each entry says itself what it was computed from.
        self.memo: dict[str, t.Any] = {}

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._index = None
            self.memo = {}
            self._ingest_pool = None  # its processes are the parent's children
            self._queue = None  # a SQLite connection must not cross a fork
            if not self._injected_store:
                self._store = None

    @property
    def backend_name(self) -> str:
        """``mongodb``, ``mongomock`` or ``embedded``, without opening anything."""
        if self._store is not None:
            return self._store.backend
        uri = self.settings["MONGODB_URI"]
        return "mongomock" if uri.startswith("mongomock://") else "mongodb" if uri else "embedded"

    @property
    def store(self) -> Store:
        """The database, opened (and its indexes created) on first use in this process.

        Opening does no other work: crash repair is an explicit step (:mod:`services.repair`).
        """
        with self._lock:
            self._check_fork()
            if self._store is None:
                s = self.settings
                self._store = open_store(s["MONGODB_URI"], s["DATABASE_NAME"], s["DATA_DIR"])
                blobs.attach(self._store, s)
            elif self._injected_store and not self._blobs_attached:
                blobs.attach(self._store, self.settings)
            self._blobs_attached = True
            store = self._store
        store.ensure_indexes()
        return store

    def close(self) -> None:
        """Close this process's database client and ingest pool (scripts and tests)."""
        with self._lock:
            if self._store is not None and not self._injected_store:
                self._store.close()
                self._store = None
            if self._ingest_pool is not None:
                self._ingest_pool.close()
                self._ingest_pool = None
            if self._queue is not None:
                self._queue.close()
                self._queue = None

    @property
    def ingest_pool(self) -> IngestPool:
        """This process's photo-analysis pool; its worker processes start on first use."""
        with self._lock:
            self._check_fork()
            if self._ingest_pool is None:
                from services.ingest import IngestPool

                self._ingest_pool = IngestPool(self.settings["INGEST_WORKERS"])
            return self._ingest_pool

    @property
    def queue(self) -> JobQueue:
        """This process's job queue (Redis or a SQLite file, from the settings)."""
        with self._lock:
            self._check_fork()
            if self._queue is None:
                from services.taskqueue import JobQueue

                self._queue = JobQueue(self)
            return self._queue

    @property
    def engine(self) -> FaceEngine:
        """The face engine; dlib loads its models on the first detection, not here."""
        with self._lock:
            if self._engine is None:
                from services import ingest

                self._engine = ingest.engine_for(ingest.AnalysisOptions.from_settings(
                    self.settings))
            return self._engine

    def sync_index(self) -> FaceIndex:
        """Create this process's embedding index if needed and apply what changed since."""
        with self._lock:
            self._check_fork()
            if self._index is None:
                from services.face_index import FaceIndex

                self._index = FaceIndex()
            index = self._index
        index.sync(self.store)
        return index
