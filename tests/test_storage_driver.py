"""What the storage module hands the database driver: dicts of the query's own, never shared."""

from __future__ import annotations

import numpy as np

from services import bookkeeping
from services import face_index
from services import recognition
from services import storage

#: Module-level projections the services pass to Store queries.
SHARED_PROJECTIONS = [
    (storage, "_FACE_LIGHT"), (bookkeeping, "_COUNT_FIELDS"), (face_index, "_FACE_FIELDS"),
    (recognition, "_CLUSTER_FIELDS"),
]


def _one_face(store):
    person_id, face_id, image_id = storage.new_id(), storage.new_id(), storage.new_id()
    moment = storage.now()
    store.insert_persons([{"_id": person_id, "name": "P", "name_lc": "p", "face_count": 1,
                           "image_count": 1, "created_at": moment}])
    store.insert_faces([{
        "_id": face_id, "seq": 1, "image_id": image_id, "image_seq": 1, "person_id": person_id,
        "embedding": storage.embedding_to_bytes(np.zeros(128)), "quality_score": 0.5,
        "face_location": {"top": 1, "right": 2, "bottom": 2, "left": 1},
        "is_manual_assignment": False, "created_at": moment,
    }], [{"_id": face_id, "mime_type": "image/jpeg", "cropped_face_base64": "x"}])
    return person_id, face_id, image_id


def test_queries_leave_shared_projections_as_they_were(store):
    """mongomock adds ``_id`` to a projection it is given: a shared one would then differ in
    every later query, on MongoDB too."""
    before = {name: dict(getattr(module, name)) for module, name in SHARED_PROJECTIONS}
    person_id, face_id, image_id = _one_face(store)

    assert "embedding" not in store.get_face(face_id)
    assert len(store.faces_of_image(image_id)) == 1
    assert len(store.faces_of_images([image_id])[image_id]) == 1
    assert len(store.faces_of_person(person_id)) == 1
    assert len(store.faces_of_person(person_id, projection=bookkeeping._COUNT_FIELDS)) == 1
    assert len(list(store.iter_faces({}, face_index._FACE_FIELDS))) == 1
    assert len(store.faces_in_seq_range(0, 1, recognition._CLUSTER_FIELDS)) == 1
    assert len(store.faces_with_seqs([1], face_index._FACE_FIELDS)) == 1

    after = {name: dict(getattr(module, name)) for module, name in SHARED_PROJECTIONS}
    assert after == before


def test_queries_leave_the_callers_dicts_as_they_were(store):
    person_id, face_id, _ = _one_face(store)
    query, projection = {"person_id": person_id}, {"person_id": 1}
    assert [f["_id"] for f in store.iter_faces(query, projection)] == [face_id]
    assert [p["_id"] for p in store.iter_persons(projection)] == [person_id]
    assert store.count("faces", query) == 1
    assert query == {"person_id": person_id} and projection == {"person_id": 1}
