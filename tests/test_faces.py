"""Faces through the API: hand corrections (move, move to a new person) and their guards.

Real dlib on real photos, on every storage backend, with the invariants checked after each test.
"""

from __future__ import annotations

import time

from services import bookkeeping
from tests import photos
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import upload


def test_move_face_between_persons(client):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    h = upload(client, photos.hopper_jpeg())
    face_id = a2["faces"][0]["face_id"]
    eileen, grace = a1["faces"][0]["person_id"], h["faces"][0]["person_id"]

    moved = client.put(f"/faces/{face_id}/move", json={"target_person_id": grace}).json["data"]
    assert moved == {"face_id": face_id, "from_person_id": eileen, "to_person_id": grace,
                     "is_manual_assignment": True, "source_person_deleted": False}
    info = client.get(f"/faces/{face_id}/info").json["data"]
    assert info["person_id"] == grace and info["is_manual_assignment"] is True
    assert client.get("/stats/").json["data"]["manual_face_assignments"] == 1

    assert_error(client.put(f"/faces/{face_id}/move", json={"target_person_id": grace}), 400,
                 "ValidationError")
    assert_error(client.put(f"/faces/{face_id}/move", json={"target_person_id": MISSING}), 404,
                 "DocumentNotFoundError")
    assert_error(client.put(f"/faces/{face_id}/move", json={}), 400, "ValidationError")
    assert_error(client.put(f"/faces/{MISSING}/move", json={"target_person_id": grace}), 404,
                 "DocumentNotFoundError")

    # Moving the last face out of a person deletes it (auto-cleanup).
    last = a1["faces"][0]["face_id"]
    result = client.put(f"/faces/{last}/move", json={"target_person_id": grace})
    assert result.json["data"]["source_person_deleted"] is True
    assert "deleted" in result.json["message"]
    assert_error(client.get(f"/persons/{eileen}"), 404, "DocumentNotFoundError")


def test_move_into_a_person_already_in_the_photo_is_409(client):
    upload(client, photos.astronaut_jpeg())
    upload(client, photos.hopper_jpeg())
    group = upload(client, photos.group_photo())
    left, right = group["faces"]
    response = client.put(f"/faces/{left['face_id']}/move",
                          json={"target_person_id": right["person_id"]})
    assert_error(response, 409, "ConflictError")


def test_move_face_to_new_person(client):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    face_id = a2["faces"][0]["face_id"]
    named = client.put(f"/faces/{face_id}/move-to-new", json={"new_person_name": "Twin"})
    data = named.json["data"]
    assert data["old_person_id"] == a1["faces"][0]["person_id"]
    assert data["new_person_name"] == "Twin" and data["source_person_deleted"] is False
    unnamed = client.put(f"/faces/{a1['faces'][0]['face_id']}/move-to-new")
    assert unnamed.json["data"]["new_person_name"] == "Person 3"  # numbers are never reused
    assert unnamed.json["data"]["source_person_deleted"] is True
    assert_error(client.put(f"/faces/{face_id}/move-to-new", json={"new_person_name": ""}), 400,
                 "ValidationError")


def test_hand_corrections_wait_for_a_running_recluster(client, store):
    a = upload(client, photos.astronaut_jpeg())
    face_id = a["faces"][0]["face_id"]
    assert store.acquire_lock(bookkeeping.RECLUSTER_LOCK, "other-worker", 600)
    assert_error(client.put(f"/faces/{face_id}/move-to-new"), 409, "ConflictError")
    assert_error(client.delete(f"/images/{a['image_id']}"), 409, "ConflictError")
    store.release_lock(bookkeeping.RECLUSTER_LOCK, "other-worker")
    assert client.put(f"/faces/{face_id}/move-to-new").status_code == 200
    # A lock left by a crashed re-clustering stops blocking once its time is up.
    assert store.acquire_lock(bookkeeping.RECLUSTER_LOCK, "crashed-worker", 0)
    time.sleep(0.01)  # older than its ttl of 0 s
    assert client.put(f"/faces/{face_id}/move-to-new").status_code == 200
