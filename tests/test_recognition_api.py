"""Search by image, re-clustering, merges and the embedding index shared by several workers."""

from __future__ import annotations

import pytest

from app import create_app
from services import recognition
from services.storage import open_store
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import assert_error
from tests.conftest import search
from tests.conftest import upload


def test_search_finds_the_person(client):
    a = upload(client, photos.astronaut_jpeg())
    h = upload(client, photos.hopper_jpeg())
    before = client.get("/stats/").json["data"]
    found = search(client, photos.mirrored(photos.astronaut_rgb()))
    best = found["matches"][0]
    assert best["person_id"] == a["faces"][0]["person_id"]
    assert best["face_id"] == a["faces"][0]["face_id"]
    assert best["image_id"] == a["image_id"] and best["person_name"] == "Person 1"
    assert 0 < best["distance"] < 0.6 and 0.5 < best["confidence"] <= 1.0
    assert best["query_face_index"] == 0 and best["query_face_location"]["bottom"] > 0
    assert found["total_matches"] == len(found["matches"]) == 1
    assert h["faces"][0]["person_id"] not in {m["person_id"] for m in found["matches"]}
    assert client.get("/stats/").json["data"] == before  # a search stores nothing


def test_search_a_group_photo_searches_every_face(client):
    upload(client, photos.astronaut_jpeg())
    upload(client, photos.hopper_jpeg())
    found = search(client, photos.group_photo())
    assert found["faces_in_query"] == 2
    assert {m["query_face_index"] for m in found["matches"]} == {0, 1}
    distances = [m["distance"] for m in found["matches"]]
    assert distances == sorted(distances)


def test_search_group_by_face_and_limit(client):
    upload(client, photos.astronaut_jpeg())
    upload(client, photos.mirrored(photos.astronaut_rgb()))
    by_person = search(client, photos.scaled(photos.astronaut_rgb(), 0.9))
    assert by_person["total_matches"] == 1
    by_face = search(client, photos.scaled(photos.astronaut_rgb(), 0.9), group_by="face")
    assert by_face["total_matches"] == 2
    limited = search(client, photos.scaled(photos.astronaut_rgb(), 0.9), group_by="face",
                     limit="1")
    assert len(limited["matches"]) == 1 and limited["total_matches"] == 2
    strict = search(client, photos.scaled(photos.astronaut_rgb(), 0.9), tolerance="0.01")
    assert strict["matches"] == []


def test_search_errors(client):
    upload(client, photos.astronaut_jpeg())
    assert search(client, photos.blank_jpeg(), 422)["error_type"] == "FaceDetectionError"
    assert search(client, b"not an image", 400)["error_type"] == "FileValidationError"
    for form in ({"tolerance": "1.5"}, {"tolerance": "x"}, {"limit": "0"}, {"limit": "101"},
                 {"group_by": "image"}):
        assert search(client, photos.astronaut_jpeg(), 400, **form)["error_type"] \
            == "ValidationError"
    assert_error(client.post("/images/search-by-image", data={},
                             content_type="multipart/form-data"), 400, "ValidationError")


def test_confidence_mapping():
    assert recognition.confidence(0.0) == 1.0
    assert recognition.confidence(0.6) == pytest.approx(0.5)
    assert recognition.confidence(1.0) == 0.0 and recognition.confidence(1.3) == 0.0
    values = [recognition.confidence(d / 20) for d in range(0, 21)]
    assert values == sorted(values, reverse=True)


@pytest.fixture
def twin(store):
    """Opens more Stores on the test's database, as other worker processes would; closes them."""
    opened = []

    def open_twin():
        opened.append(open_store(*store.source))
        return opened[-1]

    yield open_twin
    for other in opened:
        other.close()


def test_workers_see_each_others_writes(store, twin):
    """Two app instances on one database each hold an index; B sees what A changed."""
    if store.backend == "mongomock":
        pytest.skip("mongomock lives in one process's memory: use a shared backend")
    config = dict(BASE_CONFIG)
    first = create_app(config, store=twin(), environ={}).test_client()
    second = create_app(config, store=twin(), environ={}).test_client()
    assert search(second, photos.astronaut_jpeg())["matches"] == []  # empty gallery
    a1 = upload(first, photos.astronaut_jpeg())
    h = upload(first, photos.hopper_jpeg())
    seen = search(second, photos.mirrored(photos.astronaut_rgb()))
    assert seen["matches"][0]["person_id"] == a1["faces"][0]["person_id"]

    grace = h["faces"][0]["person_id"]
    first.put(f"/faces/{a1['faces'][0]['face_id']}/move", json={"target_person_id": grace})
    moved = search(second, photos.mirrored(photos.astronaut_rgb()))
    assert moved["matches"][0]["person_id"] == grace

    first.delete(f"/images/{a1['image_id']}")
    assert search(second, photos.mirrored(photos.astronaut_rgb()))["matches"] == []
    first.delete("/reset?confirm=true")
    assert search(second, photos.hopper_jpeg())["matches"] == []


def test_recluster_keeps_manual_faces_names_and_ids(client):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    a3 = upload(client, photos.scaled(photos.astronaut_rgb(), 0.85))
    h = upload(client, photos.hopper_jpeg())
    eileen, grace = a1["faces"][0]["person_id"], h["faces"][0]["person_id"]
    client.put(f"/persons/{eileen}/rename", json={"name": "Eileen"})
    client.put(f"/persons/{grace}/rename", json={"name": "Grace"})
    # A user says the third photo is someone else: that must survive re-clustering.
    split = client.put(f"/faces/{a3['faces'][0]['face_id']}/move-to-new",
                       json={"new_person_name": "Not Eileen"}).json["data"]

    result = client.get("/cluster/").json["data"]
    assert result["faces_processed"] == 4
    assert result["manual_assignments_preserved"] == 1
    assert result["persons_created"] == 0 and result["processing_time"] >= 0
    info = client.get(f"/faces/{a3['faces'][0]['face_id']}/info").json["data"]
    assert info["person_id"] == split["new_person_id"]
    assert client.get(f"/persons/{eileen}").json["data"]["name"] == "Eileen"
    assert client.get(f"/persons/{grace}").json["data"]["face_count"] == 1
    assert client.get(f"/faces/{a2['faces'][0]['face_id']}/info").json["data"]["person_id"] \
        == eileen

    # Without preserve_manual the look-alike face goes back to Eileen.
    merged = client.post("/cluster/", json={"preserve_manual": False}).json["data"]
    assert merged["manual_assignments_preserved"] == 0
    assert merged["persons_merged"] == 1 and merged["persons_deleted"] == 1
    names = {p["name"] for p in client.get("/persons/").json["data"]["persons"]}
    assert names == {"Eileen", "Grace"}


def test_recluster_splits_and_merges(client):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    h = upload(client, photos.hopper_jpeg())
    # Put Grace into Eileen's person by hand, then undo the manual flag through a merge of
    # persons that re-clustering (without preserve_manual) must split again.
    eileen = a1["faces"][0]["person_id"]
    client.put(f"/faces/{h['faces'][0]['face_id']}/move", json={"target_person_id": eileen})
    result = client.get("/cluster/?preserve_manual=false").json["data"]
    assert result["persons_created"] == 1
    persons = client.get("/persons/").json["data"]["persons"]
    assert sorted(p["face_count"] for p in persons) == [1, 2]
    assert client.get(f"/faces/{a2['faces'][0]['face_id']}/info").json["data"]["person_id"] \
        == eileen


def test_recluster_parameters_and_lock(client, store):
    upload(client, photos.astronaut_jpeg())
    for query in ("tolerance=2", "tolerance=abc", "min_samples=0", "preserve_manual=maybe"):
        assert_error(client.get(f"/cluster/?{query}"), 400, "ValidationError")
    assert_error(client.post("/cluster/", json={"min_samples": "many"}), 400, "ValidationError")
    ok = client.post("/cluster/", json={"tolerance": 0.5, "min_samples": 2}).json["data"]
    assert ok["tolerance"] == 0.5 and ok["min_samples"] == 2

    assert store.acquire_lock(recognition.RECLUSTER_LOCK, "someone-else", 600)
    assert_error(client.get("/cluster/"), 409, "ConflictError")
    store.release_lock(recognition.RECLUSTER_LOCK, "someone-else")
    assert client.get("/cluster/").status_code == 200


def test_recluster_on_empty_gallery(client):
    data = client.get("/cluster/").json["data"]
    assert data["faces_processed"] == 0 and data["persons_created"] == 0


def test_recluster_without_preserve_manual_makes_moved_faces_automatic(client):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    face_id = a2["faces"][0]["face_id"]
    client.put(f"/faces/{face_id}/move-to-new")
    client.get("/cluster/?preserve_manual=false")
    info = client.get(f"/faces/{face_id}/info").json["data"]
    assert info["person_id"] == a1["faces"][0]["person_id"]
    assert info["is_manual_assignment"] is False and info["assigned_by"] == "auto"
    assert client.get("/stats/").json["data"]["manual_face_assignments"] == 0
