"""The embedding index: loads once, then follows new faces, moves, deletions and resets."""

from __future__ import annotations

import numpy as np

from services import storage
from services.face_index import FaceIndex


def _face(store, person_id: str, vector: np.ndarray, seq: int | None = None) -> dict:
    seq = store.next_seq("faces") if seq is None else seq
    doc = {"_id": storage.new_id(), "seq": seq, "image_id": storage.new_id(),
           "person_id": person_id, "embedding": storage.embedding_to_bytes(vector)}
    store.insert_faces([doc], [{"_id": doc["_id"]}])
    return doc


def _vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, 128).astype(np.float32)


def test_index_follows_the_database(store):
    index = FaceIndex()
    index.sync(store)
    assert len(index) == 0
    a = _face(store, "p1", _vector(1))
    b = _face(store, "p2", _vector(2))
    index.sync(store)
    assert len(index) == 2
    hits = index.nearest(_vector(1), 0.1)
    assert [(h[0], h[1]) for h in hits] == [(a["_id"], "p1")]
    assert hits[0][3] < 1e-5

    store.set_face_person(a["_id"], "p3", manual=True)
    store.log_face_changes([(a["_id"], "p3")])
    index.sync(store)
    assert index.nearest(_vector(1), 0.1)[0][1] == "p3"

    store.delete_faces([b["_id"]])
    store.log_face_changes([(b["_id"], "")])
    index.sync(store)
    assert len(index) == 1 and index.nearest(_vector(2), 0.1) == []
    embeddings, face_ids, person_ids, _ = index.snapshot()
    assert embeddings.shape == (1, 128) and list(person_ids) == ["p3"]

    store.reset()
    store.new_epoch()
    index.sync(store)
    assert len(index) == 0


def test_a_face_written_late_is_not_lost(store):
    """A writer reserves a seq, a reader syncs, then the face lands: the hole is re-read."""
    index = FaceIndex()
    late_seq = store.next_seq("faces")
    _face(store, "p1", _vector(1))
    index.sync(store)
    assert len(index) == 1
    _face(store, "p2", _vector(2), seq=late_seq)
    index.sync(store)
    assert len(index) == 2


def test_nearest_limit_and_order(store):
    index = FaceIndex()
    base = _vector(7)
    for step in range(5):
        _face(store, f"p{step}", base + step * 0.01)
    index.sync(store)
    hits = index.nearest(base, 1.0, limit=3)
    assert [h[1] for h in hits] == ["p0", "p1", "p2"]
    assert [h[3] for h in hits] == sorted(h[3] for h in hits)
    assert index.memory_bytes() > 0


def test_a_deletion_logged_before_its_face_goes_leaves_no_ghost(store):
    """Deletions are logged first (services/bookkeeping.py): an index that reads the log
    entry while the face is still there never shows the face, on a sync or a reload."""
    index = FaceIndex()
    index.sync(store)
    seq = store.next_seq("faces")  # reserved: a hole the next sync waits for
    index.sync(store)
    face = _face(store, "p1", _vector(1), seq=seq)
    store.log_face_changes([(face["_id"], "")])  # the face is not deleted yet
    index.sync(store)
    assert index.nearest(_vector(1), 0.1) == []
    fresh = FaceIndex()
    fresh.sync(store)  # a reload reads the face and then the recent deletions
    assert fresh.nearest(_vector(1), 0.1) == []
    store.delete_faces([face["_id"]])
