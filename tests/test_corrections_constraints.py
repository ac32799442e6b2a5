"""Corrections that stick: "not this person" and "not the same people" (issue 14).

Real dlib on real photos through the API, with the invariants (no face in a person it was
rejected from, records naming what exists) checked after each test.
"""

from __future__ import annotations

import numpy as np

from app import create_app
from services import clustering
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import upload
from tests.invariants import check_invariants


def _astronaut_twice(client):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    person = a1["faces"][0]["person_id"]
    assert a2["faces"][0]["person_id"] == person
    return person, a1["faces"][0]["face_id"], a2["faces"][0]["face_id"]


def _person_of(client, face_id):
    return client.get(f"/faces/{face_id}/info").json["data"]["person_id"]


def test_rejected_face_stays_out_through_reclustering(client):
    person, _, face = _astronaut_twice(client)
    rejected = client.put(f"/faces/{face}/reject", json={}).json["data"]
    assert rejected["rejected_person_id"] == person and rejected["rejected_from"] == [person]
    assert _person_of(client, face) == rejected["new_person_id"]
    # Even with hand moves free to move, a loose threshold does not join it back.
    for params in ("preserve_manual=false", "preserve_manual=false&tolerance=1.0", ""):
        assert client.post(f"/cluster/?{params}").status_code == 200
        assert _person_of(client, face) != person
    client.delete(f"/faces/{face}/reject")
    client.post("/cluster/?preserve_manual=false")
    assert _person_of(client, face) == person  # forgotten: the faces join again


def test_rejected_face_is_not_assigned_back_by_upload_or_merge(client):
    person, _, face = _astronaut_twice(client)
    new_person = client.put(f"/faces/{face}/reject").json["data"]["new_person_id"]
    again = upload(client, photos.scaled(photos.mirrored(photos.astronaut_rgb()), 0.9))
    assert again["faces"][0]["person_id"] != person  # a near copy of the rejected face
    assert _person_of(client, face) == new_person
    merge = client.put(f"/persons/{person}/merge",
                       json={"source_person_ids": [new_person], "force": True})
    assert_error(merge, 409, "ConflictError")
    assert merge.json["details"]["face_id"] == face
    # A hand move is the user's latest word: it forgets the rejection.
    moved = client.put(f"/faces/{face}/move", json={"target_person_id": person})
    assert moved.status_code == 200
    assert client.delete(f"/faces/{face}/reject").json["data"]["forgotten"] == []


def test_reject_errors(client):
    person, other_face, face = _astronaut_twice(client)
    hopper = upload(client, photos.hopper_jpeg())["faces"][0]
    assert_error(client.put(f"/faces/{MISSING}/reject"), 404, "DocumentNotFoundError")
    assert_error(client.put(f"/faces/{face}/reject", json={"person_id": hopper["person_id"]}),
                 400, "ValidationError")
    assert_error(client.put(f"/faces/{face}/reject", json={"person_id": "x"}), 400,
                 "ValidationError")
    assert_error(client.delete(f"/faces/{face}/reject?person_id={person}"), 404,
                 "DocumentNotFoundError")
    client.put(f"/faces/{face}/reject", json={"person_id": person})
    forgotten = client.delete(f"/faces/{face}/reject?person_id={person}").json["data"]
    assert forgotten == {"face_id": face, "forgotten": [person], "rejected_from": []}
    # Rejecting a person's only face empties it: the person and its record go.
    only = client.put(f"/faces/{hopper['face_id']}/reject").json["data"]
    assert only["source_person_deleted"] and only["rejected_from"] == []
    assert _person_of(client, other_face) == person


def test_not_same_persons_stay_apart_and_merge_needs_force(client):
    a = upload(client, photos.astronaut_jpeg())["faces"][0]["person_id"]
    h = upload(client, photos.hopper_jpeg())["faces"][0]["person_id"]
    marked = client.post(f"/persons/{a}/not-same", json={"other_person_id": h}).json["data"]
    assert marked == {"person_id": a, "other_person_id": h, "not_same": [h]}
    assert client.get(f"/persons/{h}").json["data"]["not_same"] == [a]
    result = client.post("/cluster/?tolerance=1.0&preserve_manual=false").json["data"]
    assert result["persons_total"] == 2
    assert client.get(f"/persons/{a}").json["data"]["not_same"] == [h]
    assert_error(client.put(f"/persons/{a}/merge", json={"source_person_ids": [h]}), 409,
                 "ConflictError")
    merged = client.put(f"/persons/{a}/merge", json={"source_person_ids": [h], "force": True})
    assert merged.status_code == 200
    assert client.get(f"/persons/{a}").json["data"]["not_same"] == []


def test_not_same_without_it_reclustering_joins_them(client):
    a = upload(client, photos.astronaut_jpeg())["faces"][0]["person_id"]
    h = upload(client, photos.hopper_jpeg())["faces"][0]["person_id"]
    client.post(f"/persons/{a}/not-same", json={"other_person_id": h})
    forgotten = client.delete(f"/persons/{h}/not-same/{a}").json["data"]
    assert forgotten["not_same"] == []
    result = client.post("/cluster/?tolerance=1.0&preserve_manual=false").json["data"]
    assert result["persons_total"] == 1  # what the record prevented


def test_not_same_errors_and_carry_over(client):
    person, _, face = _astronaut_twice(client)
    h = upload(client, photos.hopper_jpeg())["faces"][0]["person_id"]
    a = person
    assert_error(client.post(f"/persons/{a}/not-same", json={"other_person_id": a}), 400,
                 "ValidationError")
    assert_error(client.post(f"/persons/{a}/not-same", json={"other_person_id": MISSING}), 404,
                 "DocumentNotFoundError")
    assert_error(client.post(f"/persons/{MISSING}/not-same", json={"other_person_id": a}),
                 404, "DocumentNotFoundError")
    assert_error(client.post(f"/persons/{a}/not-same", json={}), 400, "ValidationError")
    assert_error(client.delete(f"/persons/{a}/not-same/{h}"), 404, "DocumentNotFoundError")
    # A merge carries the merged person's records to the person receiving its faces.
    split = client.put(f"/faces/{face}/move-to-new").json["data"]["new_person_id"]
    client.post(f"/persons/{split}/not-same", json={"other_person_id": h})
    assert client.put(f"/persons/{a}/merge",
                      json={"source_person_ids": [split]}).status_code == 200
    assert client.get(f"/persons/{a}").json["data"]["not_same"] == [h]
    # A person deleted takes its records with it.
    client.delete(f"/images/{client.get(f'/persons/{h}').json['data']['images'][0]['_id']}")
    assert client.get(f"/persons/{a}").json["data"]["not_same"] == []


def test_a_recluster_job_honours_a_rejection_and_not_same(store, tmp_path):
    """The background path (``POST /cluster/?async=true``) reads the same records as the
    request: a loose threshold with hand moves free joins neither back."""
    # A queue no worker reads, run inside the request that queues the job (tests/test_jobs.py).
    app = create_app({**BASE_CONFIG, "DATA_DIR": str(tmp_path / "data")}, store=store,
                     environ={})
    app.extensions["face_gallery"].queue.immediate = True
    try:
        with app.test_client() as client:
            person, kept, face = _astronaut_twice(client)
            client.put(f"/faces/{face}/reject")
            hopper = upload(client, photos.hopper_jpeg())["faces"][0]["face_id"]
            client.post(f"/persons/{person}/not-same",
                        json={"other_person_id": _person_of(client, hopper)})
            queued = client.post("/cluster/?async=true", json={"tolerance": 0.5})
            assert queued.status_code == 202, queued.json
            job = client.get(f"/jobs/{queued.json['data']['job_id']}").json["data"]
            assert job["result"]["faces_processed"] == 3
            # The rejected face and hopper may join (nothing keeps those two apart); the
            # person emptied then passes its records on, so a second run keeps them apart.
            for _ in range(2):
                queued = client.post("/cluster/?async=true",
                                     json={"tolerance": 1.0, "preserve_manual": False})
                job = client.get(f"/jobs/{queued.json['data']['job_id']}").json["data"]
                assert (job["kind"], job["status"]) == ("recluster", "done"), job
                assert _person_of(client, kept) == person
                assert _person_of(client, face) != person
                assert _person_of(client, hopper) != person
                assert client.get(f"/persons/{person}").json["data"]["not_same"] == [
                    _person_of(client, hopper)]
        check_invariants(store)
    finally:
        app.extensions["face_gallery"].close()


def test_cannot_link_keeps_groups_apart_in_every_path():
    rng = np.random.default_rng(3)
    centre = rng.normal(0, 0.06, 128)
    x = np.stack([centre + rng.normal(0, 0.01, 128) for _ in range(8)])
    images = [str(i) for i in range(8)]
    assert len(set(clustering.cluster_faces(x, images))) == 1
    apart = [([0, 1, 2], [5, 6, 7])]
    for min_samples in (1, 3):
        labels = clustering.cluster_faces(x, images, cannot_link=apart, min_samples=min_samples)
        assert not set(labels[[0, 1, 2]]) & set(labels[[5, 6, 7]])
    # A cluster never becomes a person one of its faces may not join.
    mapping, _ = clustering.match_clusters_to_persons(
        [0, 0, 1], ["P", "P", "P"], forbidden=[set(), set(), {"P"}])
    assert mapping == {0: "P", 1: None}
