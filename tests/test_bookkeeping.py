"""The persons' bookkeeping through the API: counters kept with ``$inc``, locks left behind by
crashed requests, and re-clustering that moves a whole person at once.

The ``client`` fixture checks every counter against the faces after each test; the tests also
assert the counts the API shows.
"""

from __future__ import annotations

import time

import pytest

from app import create_app
from services import bookkeeping
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import assert_error
from tests.conftest import search
from tests.conftest import upload
from tests.invariants import check_invariants


def person(client, person_id: str) -> dict:
    response = client.get(f"/persons/{person_id}")
    assert response.status_code == 200, response.json
    return response.json["data"]


def counts(client, person_id: str) -> tuple[int, int, int]:
    """(face_count, image_count, manual_face_count) as the API shows them."""
    data = person(client, person_id)
    return data["face_count"], data["image_count"], data["manual_face_count"]


# -- manual faces and image deletion --------------------------------------------------------

def test_deleting_the_image_of_a_manual_face_counts_it_off_a_surviving_person(client):
    upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    h = upload(client, photos.hopper_jpeg())
    grace = h["faces"][0]["person_id"]
    client.put(f"/faces/{a2['faces'][0]['face_id']}/move", json={"target_person_id": grace})
    assert counts(client, grace) == (2, 2, 1)
    assert client.get("/stats/").json["data"]["manual_face_assignments"] == 1
    changed = person(client, grace)["updated_at"]

    time.sleep(0.01)  # timestamps have millisecond steps
    deleted = client.delete(f"/images/{a2['image_id']}").json["data"]
    assert deleted == {"deleted_image_id": a2["image_id"], "faces_deleted": 1,
                       "persons_deleted": []}
    assert counts(client, grace) == (1, 1, 0)
    assert person(client, grace)["updated_at"] > changed  # ISO 8601 strings sort as times
    assert client.get("/stats/").json["data"]["manual_face_assignments"] == 0
    # The deleted face is gone from the embedding index too: searches no longer find it.
    found = search(client, photos.mirrored(photos.astronaut_rgb()), group_by="face")
    assert a2["faces"][0]["face_id"] not in {m["face_id"] for m in found["matches"]}
    assert len(found["matches"]) == 1


def test_deleting_an_automatic_face_leaves_the_manual_count_alone(client):
    upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    h = upload(client, photos.hopper_jpeg())
    grace = h["faces"][0]["person_id"]
    client.put(f"/faces/{a2['faces'][0]['face_id']}/move", json={"target_person_id": grace})
    client.delete(f"/images/{h['image_id']}")
    assert counts(client, grace) == (1, 1, 1)
    # The last face goes: the person goes with it.
    assert client.delete(f"/images/{a2['image_id']}").json["data"]["persons_deleted"] == [grace]


def test_a_face_moved_twice_by_hand_counts_once_as_manual(client):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    h = upload(client, photos.hopper_jpeg())
    eileen, grace = a1["faces"][0]["person_id"], h["faces"][0]["person_id"]
    face_id = a2["faces"][0]["face_id"]
    client.put(f"/faces/{face_id}/move", json={"target_person_id": grace})
    client.put(f"/faces/{face_id}/move", json={"target_person_id": eileen})
    assert counts(client, eileen) == (2, 2, 1)
    assert counts(client, grace) == (1, 1, 0)


# -- persons' numbers and names -------------------------------------------------------------

def test_new_persons_are_numbered_by_a_counter_and_found_by_their_names(client):
    a = upload(client, photos.astronaut_jpeg())["faces"][0]
    h = upload(client, photos.hopper_jpeg())["faces"][0]
    assert [person(client, p["person_id"])["name"] for p in (a, h)] == ["Person 1", "Person 2"]
    assert person(client, h["person_id"])["named_by_user"] is False
    split = client.put(f"/faces/{h['face_id']}/move-to-new").json["data"]
    assert split["new_person_name"] == "Person 3" and split["source_person_deleted"] is True
    # Numbers are never reused, even after the person holding one is gone.
    again = client.put(f"/faces/{a['face_id']}/move-to-new").json["data"]
    assert again["new_person_name"] == "Person 4"
    found = client.get("/persons/?q=PERSON 3").json["data"]["persons"]
    assert [p["_id"] for p in found] == [split["new_person_id"]]
    assert found[0]["named_by_user"] is False
    client.put(f"/persons/{again['new_person_id']}/rename", json={"name": "Eileen"})
    assert person(client, again["new_person_id"])["named_by_user"] is True


# -- hand corrections while a re-clustering runs -------------------------------------------

def test_hand_corrections_are_refused_while_a_recluster_runs(client, store):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    h = upload(client, photos.hopper_jpeg())
    eileen, grace = a1["faces"][0]["person_id"], h["faces"][0]["person_id"]
    face_id = a2["faces"][0]["face_id"]
    assert store.acquire_lock(bookkeeping.RECLUSTER_LOCK, "other-worker", 600)
    for response in (
        client.put(f"/faces/{face_id}/move", json={"target_person_id": grace}),
        client.put(f"/faces/{face_id}/move-to-new"),
        client.put(f"/persons/{grace}/merge", json={"source_person_ids": [eileen]}),
        client.delete(f"/images/{a2['image_id']}"),
    ):
        assert_error(response, 409, "ConflictError")
        assert response.json["details"] == {"retry_after_seconds": 5}
    assert_error(client.get("/cluster/"), 409, "ConflictError")
    assert counts(client, eileen) == (2, 2, 0) and counts(client, grace) == (1, 1, 0)
    store.release_lock(bookkeeping.RECLUSTER_LOCK, "other-worker")
    assert client.put(f"/faces/{face_id}/move", json={"target_person_id": grace}
                      ).status_code == 200


# -- locks left by crashed requests ---------------------------------------------------------

def test_an_expired_lock_is_taken_over_and_a_live_one_is_not(store):
    assert store.acquire_lock("job", "crashed", 0)
    time.sleep(0.01)  # older than its ttl of 0 s
    assert store.lock_holder("job") is None
    assert store.acquire_lock("job", "me", 30)
    assert store.lock_holder("job") == "me"
    assert not store.acquire_lock("job", "other", 30)
    store.release_lock("job", "crashed")  # the old holder's release frees nothing of mine
    assert store.lock_holder("job") == "me"
    store.release_lock("job", "me")
    assert store.acquire_lock("job", "other", 30)


def test_a_person_lock_left_by_a_crashed_request_does_not_block_moves(client, store):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    h = upload(client, photos.hopper_jpeg())
    grace = h["faces"][0]["person_id"]
    assert store.acquire_lock(f"person:{grace}", "crashed-request", 0)
    time.sleep(0.01)
    started = time.monotonic()
    moved = client.put(f"/faces/{a2['faces'][0]['face_id']}/move",
                       json={"target_person_id": grace})
    assert moved.status_code == 200, moved.json
    assert time.monotonic() - started < bookkeeping.PERSON_LOCK_WAIT
    assert store.lock_holder(f"person:{grace}") is None  # released after the move
    assert counts(client, grace) == (2, 2, 1)
    assert counts(client, a1["faces"][0]["person_id"]) == (1, 1, 0)


def test_a_recluster_lock_left_by_a_crashed_worker_is_taken_over(client, store):
    upload(client, photos.astronaut_jpeg())
    assert store.acquire_lock(bookkeeping.RECLUSTER_LOCK, "crashed-worker", 0)
    time.sleep(0.01)
    response = client.get("/cluster/")
    assert response.status_code == 200, response.json
    assert store.lock_holder(bookkeeping.RECLUSTER_LOCK) is None


# -- re-clustering a whole person into another ------------------------------------------

@pytest.fixture
def split_eileen(store):
    """Eileen as two persons of two automatic faces each, the older one named."""
    normal = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    # A zero tolerance gives each photo uploaded with it a person of its own.
    strict = create_app({**BASE_CONFIG, "FACE_RECOGNITION_TOLERANCE": 0.0}, store=store,
                        environ={}).test_client()
    first = upload(strict, photos.astronaut_jpeg())["faces"][0]
    first_twin = upload(normal, photos.scaled(photos.astronaut_rgb(), 0.8))["faces"][0]
    second = upload(strict, photos.mirrored(photos.astronaut_rgb()))["faces"][0]
    second_twin = upload(normal, photos.mirrored(photos.scaled(photos.astronaut_rgb(), 0.8))
                         )["faces"][0]
    kept, gone = first["person_id"], second["person_id"]
    assert first_twin["person_id"] == kept and second_twin["person_id"] == gone != kept
    normal.put(f"/persons/{kept}/rename", json={"name": "Eileen"})
    faces = [first, first_twin, second, second_twin]
    yield normal, kept, gone, faces
    check_invariants(store)


def test_a_recluster_merges_a_whole_person(split_eileen):
    client, kept, gone, faces = split_eileen
    assert counts(client, kept) == counts(client, gone) == (2, 2, 0)
    result = client.get("/cluster/").json["data"]
    assert result["faces_moved"] == 2
    assert result["persons_merged"] == 1 and result["persons_deleted"] == 1
    assert result["persons_created"] == 0 and result["persons_total"] == 1
    # Two persons of two faces each: the tie goes to the older person, which keeps its name.
    assert_error(client.get(f"/persons/{gone}"), 404, "DocumentNotFoundError")
    eileen = person(client, kept)
    assert eileen["name"] == "Eileen" and counts(client, kept) == (4, 4, 0)
    for face in faces:
        info = client.get(f"/faces/{face['face_id']}/info").json["data"]
        assert info["person_id"] == kept and info["is_manual_assignment"] is False
    best = max(faces, key=lambda f: f["quality_score"])
    assert eileen["thumbnail_face_id"] == best["face_id"]
    # The merged faces are searchable under their new person at once.
    found = search(client, photos.mirrored(photos.astronaut_rgb()), group_by="face")
    assert len(found["matches"]) == 4
    assert {m["person_id"] for m in found["matches"]} == {kept}
