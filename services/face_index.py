"""An in-memory matrix of every face embedding, kept current across worker processes.

Each process holds one :class:`FaceIndex`: a float32 matrix with one row per face, its face id
and its person. It is loaded once from the database (a projection without the blobs) and then
brought up to date before every use by reading only what changed:

* new faces, by their ``seq`` (a counter the upload reserves before inserting);
* moves and deletions, from the ``face_changes`` log (also numbered by a counter);
* anything wholesale (re-clustering, reset) changes the store's epoch token, and the index
  reloads in full.

A number reserved by a writer that has not inserted yet is a *hole*: it is re-read on later
syncs until it appears or is older than ``HOLE_PATIENCE`` seconds (a failed upload).
"""

from __future__ import annotations

import threading
import time
import typing as t

import numpy as np
import numpy.typing as npt

from services import clustering
from services import storage
from services.storage import Store

HOLE_PATIENCE = 120.0
#: How far back a full load looks for numbers reserved but not yet written.
RECENT_WINDOW = 1000
_FACE_FIELDS = {"embedding": 1, "person_id": 1, "image_id": 1, "seq": 1}
_GROWTH = 1.5
_EXACT_CHUNK = 65536


class _SeqCursor:
    """Reads a numbered stream (faces or changes) once each, tolerating late writers."""

    def __init__(self, counter: str) -> None:
        self.counter = counter
        self.done = 0
        self.holes: dict[int, float] = {}

    def pending(self, store: Store) -> tuple[int, int, list[int]]:
        top = store.counter(self.counter)
        return self.done, top, sorted(self.holes)

    def advance(self, top: int, seen: t.Iterable[int], low: int) -> None:
        moment = time.monotonic()
        seen = set(seen)
        for seq in range(low + 1, top + 1):
            if seq not in seen:
                self.holes.setdefault(seq, moment)
        for seq in list(self.holes):
            if seq in seen or moment - self.holes[seq] > HOLE_PATIENCE:
                del self.holes[seq]
        self.done = max(self.done, top)


class FaceIndex:
    """Embeddings of all faces with their face and person ids, for search and assignment."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._clear()

    def _clear(self) -> None:
        self.epoch: str | None = None
        self._matrix = np.zeros((0, 128), dtype=np.float32)
        self._norms = np.zeros(0, dtype=np.float32)
        self._face_ids: list[str | None] = []
        self._person_ids: list[str] = []
        self._image_ids: list[str] = []
        self._rows: dict[str, int] = {}
        #: Faces whose deletion was read before the face itself: never loaded afterwards.
        #: Deletions are logged before the faces go (a crash in between must not leave a
        #: ghost), so a sync can read the deletion and then the face. Ids are never reused.
        self._deleted: set[str] = set()
        self._size = 0
        self._snapshot: tuple[t.Any, ...] | None = None
        self._faces = _SeqCursor("faces")
        self._changes = _SeqCursor("face_changes")

    # -- keeping current ---------------------------------------------------------------

    def sync(self, store: Store) -> None:
        """Apply whatever changed in the database since the last sync."""
        with self._lock:
            epoch = store.epoch()
            if epoch != self.epoch:
                self._reload(store, epoch)
                return
            self._read_new_faces(store)
            self._read_changes(store)

    def _reload(self, store: Store, epoch: str) -> None:
        self._clear()
        self.epoch = epoch
        # Counters first: anything written after this point is read by the next sync.
        faces_top = store.counter("faces")
        changes_top = store.counter("face_changes")
        docs = list(store.iter_faces({}, _FACE_FIELDS))
        self._add(docs)
        # Deletions are logged before the faces go, so one logged before the counters were
        # read may be of a face read just now: the recent ones are applied again.
        for entry in store.face_changes_since(max(0, changes_top - RECENT_WINDOW), changes_top):
            if not entry["person_id"]:
                self._apply_change(entry["face_id"], "")
        # Only recent numbers can belong to writes still in flight; older gaps are deletions.
        recent = max(0, faces_top - RECENT_WINDOW)
        self._faces.advance(faces_top, (d.get("seq", 0) for d in docs if d.get("seq", 0) > recent),
                            recent)
        self._changes.done = changes_top

    def _read_new_faces(self, store: Store) -> None:
        low, top, holes = self._faces.pending(store)
        if top <= low and not holes:
            return
        docs = store.faces_in_seq_range(low, top, _FACE_FIELDS) if top > low else []
        if holes:
            docs += store.faces_with_seqs(holes, _FACE_FIELDS)
        self._add([d for d in docs if d["_id"] not in self._rows])
        self._faces.advance(top, (d.get("seq", 0) for d in docs), low)

    def _read_changes(self, store: Store) -> None:
        low, top, holes = self._changes.pending(store)
        if top <= low and not holes:
            return
        entries = store.face_changes_since(low, top) if top > low else []
        if holes:
            entries += store.face_changes_with_seqs(holes)
        for entry in sorted(entries, key=lambda e: e["seq"]):
            self._apply_change(entry["face_id"], entry["person_id"])
        self._changes.advance(top, (e["seq"] for e in entries), low)

    def _add(self, docs: list[dict[str, t.Any]]) -> None:
        docs = [d for d in docs if d["_id"] not in self._deleted]
        if not docs:
            return
        self._snapshot = None
        vectors = np.stack([storage.embedding_from_bytes(d["embedding"]) for d in docs])
        needed = self._size + len(docs)
        if needed > len(self._matrix):
            capacity = max(needed, int(len(self._matrix) * _GROWTH), 1024)
            matrix = np.zeros((capacity, 128), dtype=np.float32)
            matrix[: self._size] = self._matrix[: self._size]
            norms = np.zeros(capacity, dtype=np.float32)
            norms[: self._size] = self._norms[: self._size]
            self._matrix, self._norms = matrix, norms
        rows = slice(self._size, needed)
        self._matrix[rows] = vectors
        self._norms[rows] = np.einsum("ij,ij->i", vectors, vectors)
        for offset, doc in enumerate(docs):
            self._rows[doc["_id"]] = self._size + offset
            self._face_ids.append(doc["_id"])
            self._person_ids.append(doc["person_id"])
            self._image_ids.append(doc["image_id"])
        self._size = needed

    def _apply_change(self, face_id: str, person_id: str) -> None:
        row = self._rows.get(face_id)
        if row is None:
            # Not loaded yet: a move is in the face document already; a deletion is kept.
            if not person_id:
                self._deleted.add(face_id)
            return
        self._snapshot = None
        if person_id:
            self._person_ids[row] = person_id
            return
        del self._rows[face_id]
        self._face_ids[row] = None
        self._person_ids[row] = ""
        self._norms[row] = np.inf  # a deleted row is infinitely far from every query
        if len(self._rows) < self._size // 2 and self._size > 1024:
            self._compact()

    def _compact(self) -> None:
        keep = [i for i in range(self._size) if self._face_ids[i] is not None]
        self._matrix = self._matrix[keep]
        self._norms = self._norms[keep]
        self._face_ids = [self._face_ids[i] for i in keep]
        self._person_ids = [self._person_ids[i] for i in keep]
        self._image_ids = [self._image_ids[i] for i in keep]
        self._size = len(keep)
        self._rows = {face_id: i for i, face_id in enumerate(self._face_ids)}  # type: ignore

    # -- reading -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def snapshot(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.str_],
                                npt.NDArray[np.str_], npt.NDArray[np.str_]]:
        """(embeddings, face ids, person ids, image ids) of every live face, row-aligned.

        Cached until the next change: turning 100,000 id strings into arrays costs ~25 ms.
        """
        with self._lock:
            if self._snapshot is None:
                self._snapshot = self._build_snapshot()
            return self._snapshot  # type: ignore[return-value]

    def _build_snapshot(self) -> tuple[t.Any, ...]:
        with self._lock:
            live = [i for i in range(self._size) if self._face_ids[i] is not None]
            if len(live) == self._size:
                rows: t.Any = slice(0, self._size)
                return (self._matrix[rows], np.array(self._face_ids[: self._size]),
                        np.array(self._person_ids[: self._size]),
                        np.array(self._image_ids[: self._size]))
            return (self._matrix[live], np.array([self._face_ids[i] for i in live]),
                    np.array([self._person_ids[i] for i in live]),
                    np.array([self._image_ids[i] for i in live]))

    def nearest(self, query: npt.NDArray[np.floating], max_distance: float,
                limit: int | None = None) -> list[tuple[str, str, str, float]]:
        """Faces within ``max_distance`` of ``query``, nearest first: (face, person, image, d).

        ``limit`` keeps only the nearest ones; None keeps all within the distance.
        """
        with self._lock:
            if self._size == 0:
                return []
            q = np.asarray(query, dtype=np.float32).reshape(1, -1)
            squared = clustering.face_distances(self._matrix[: self._size], q, squared=True,
                                                a_norms=self._norms[: self._size])[:, 0]
            # float32 first, with its documented error as margin; then the candidates again in
            # float64, so the boundary is exact (a loose tolerance can make every row one).
            margin = max_distance**2 + clustering.SQUARED_ERROR_F32
            rows = np.flatnonzero(squared <= margin)
            query64 = q.astype(np.float64)
            exact = np.concatenate([np.zeros(0)] + [
                clustering.face_distances(
                    self._matrix[rows[i:i + _EXACT_CHUNK]].astype(np.float64), query64)[:, 0]
                for i in range(0, len(rows), _EXACT_CHUNK)])
            keep = exact <= max_distance
            rows, exact = rows[keep], exact[keep]
            order = np.argsort(exact, kind="stable")
            if limit is not None:
                order = order[:limit]
            hits = []
            for row, distance in zip(rows[order], exact[order], strict=True):
                face_id = self._face_ids[row]
                if face_id is not None:
                    hits.append((face_id, self._person_ids[row], self._image_ids[row],
                                 float(distance)))
            return hits

    def memory_bytes(self) -> int:
        """Bytes held by the matrix and norms (the id lists add roughly 200 B a face)."""
        return int(self._matrix.nbytes + self._norms.nbytes)
