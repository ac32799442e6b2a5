"""Re-clustering rules on hand-made embeddings: exact layouts real photos rarely produce."""

from __future__ import annotations

import numpy as np

from config import load_config
from services import bookkeeping
from services import recognition
from services import storage
from services.context import Gallery
from tests.invariants import check_invariants


def _gallery(store, layout):
    """Write persons, images and faces: layout rows are (person, image, centre, manual)."""
    rng = np.random.default_rng(0)
    persons = {key: bookkeeping.new_person_doc(store) for key in {row[0] for row in layout}}
    images = {key: storage.new_id() for key in {row[1] for row in layout}}
    moment = storage.now()
    for key, image_id in images.items():
        store.insert_image({
            "_id": image_id, "seq": store.next_seq("images"), "status": "ready",
            "filename": key, "mime_type": "image/jpeg", "sha256": image_id, "size_bytes": 1,
            "width": 1, "height": 1, "exif": {}, "taken_at": None, "photo_date": moment,
            "album_id": "", "section_id": "", "created_at": moment, "updated_at": moment,
            "face_count": sum(1 for row in layout if row[1] == key)},
            {"_id": image_id, "mime_type": "image/jpeg", "original_image_base64": ""})
    faces = []
    for left, (person, image, centre, manual) in enumerate(layout):
        doc = persons[person]
        doc["face_count"] += 1
        doc["image_count"] += 1
        doc["manual_face_count"] += int(manual)
        vector = (centre + rng.normal(0, 0.02, 128)).astype(np.float32)
        faces.append({
            "_id": storage.new_id(), "seq": store.next_seq("faces"), "image_id": images[image],
            "image_seq": 1, "person_id": doc["_id"], "quality_score": 0.5,
            "embedding": storage.embedding_to_bytes(vector),
            "face_location": {"top": 0, "right": left + 1, "bottom": 1, "left": left},
            "is_manual_assignment": manual, "assigned_by": "manual" if manual else "auto",
            "created_at": moment, "updated_at": moment})
    store.insert_persons(list(persons.values()))
    store.insert_faces(faces, [{"_id": f["_id"], "cropped_face_base64": ""} for f in faces])
    check_invariants(store)
    return persons, faces


def test_a_person_never_gets_two_faces_of_one_photo(store):
    """P's manual face M stays in P while P wins, by majority, the cluster holding another
    face of M's photo: that face must go elsewhere, not into P."""
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.06, 128)
    b = a + rng.normal(0, 0.06, 128)  # ~0.7 from a: two people
    persons, faces = _gallery(store, [
        ("P", "J", b, False), ("P", "K", b, False), ("P", "I", a, True),
        ("Q", "L", a, False), ("Q", "N", a, False), ("R", "I", b, False),
    ])
    gallery = Gallery(load_config({"FLASK_ENV": "testing"}, environ={}), store=store)
    result = recognition.recluster(gallery, eps=0.61, min_samples=1)
    check_invariants(store)
    assert result["manual_assignments_preserved"] == 1
    manual = store.get_face(faces[2]["_id"])
    assert manual["person_id"] == persons["P"]["_id"]  # the user's choice stands
    twin = store.get_face(faces[5]["_id"])
    assert twin["person_id"] == persons["R"]["_id"]  # it stays where it was, R survives
    assert result["persons_created"] == 0 and result["persons_deleted"] == 0
