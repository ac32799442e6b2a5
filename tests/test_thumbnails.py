"""A person's thumbnail is its best-quality face, whichever way faces arrive or leave:
uploads, moves by hand and re-clustering.

The photos differ in quality on purpose: Eileen blurred (about 0.47), small (0.53) and sharp
(0.72); Grace sharp (0.84). Each test checks the order it relies on.
"""

from __future__ import annotations

from app import create_app
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import upload
from tests.invariants import check_invariants


def thumbnail_of(client, person_id: str) -> str:
    """The person's thumbnail face id; the thumbnail endpoint must serve that face's crop."""
    person = client.get(f"/persons/{person_id}").json["data"]
    face_id = person["thumbnail_face_id"]
    assert person["thumbnail_url"] == f"/faces/{face_id}"
    served = client.get(f"/persons/{person_id}/thumbnail")
    assert served.status_code == 200
    assert served.data == client.get(f"/faces/{face_id}").data
    return face_id


def only_face(result: dict) -> dict:
    [face] = result["faces"]
    return face


def test_thumbnail_follows_the_best_face_on_upload(client):
    blurred = only_face(upload(client, photos.blurred(photos.astronaut_rgb(), 2)))
    eileen = blurred["person_id"]
    assert thumbnail_of(client, eileen) == blurred["face_id"]
    sharp = only_face(upload(client, photos.astronaut_jpeg()))
    assert sharp["person_id"] == eileen and sharp["quality_score"] > blurred["quality_score"]
    assert thumbnail_of(client, eileen) == sharp["face_id"]
    small = only_face(upload(client, photos.scaled(photos.astronaut_rgb(), 0.6)))
    assert small["person_id"] == eileen and small["quality_score"] < sharp["quality_score"]
    assert thumbnail_of(client, eileen) == sharp["face_id"]


def test_thumbnail_follows_the_best_face_on_moves(client):
    blurred = only_face(upload(client, photos.blurred(photos.astronaut_rgb(), 2)))
    small = only_face(upload(client, photos.scaled(photos.astronaut_rgb(), 0.6)))
    sharp = only_face(upload(client, photos.astronaut_jpeg()))
    grace = only_face(upload(client, photos.hopper_jpeg()))
    eileen = sharp["person_id"]
    assert blurred["quality_score"] < small["quality_score"] < sharp["quality_score"] \
        < grace["quality_score"]
    assert thumbnail_of(client, eileen) == sharp["face_id"]

    # The thumbnail face leaves: the best face left takes over.
    split = client.put(f"/faces/{sharp['face_id']}/move-to-new").json["data"]
    assert thumbnail_of(client, eileen) == small["face_id"]
    assert thumbnail_of(client, split["new_person_id"]) == sharp["face_id"]
    # A face that is not the thumbnail leaves, then comes back: being worse, it changes
    # nothing (the thumbnail taken over kept its quality).
    client.put(f"/faces/{blurred['face_id']}/move-to-new")
    assert thumbnail_of(client, eileen) == small["face_id"]
    client.put(f"/faces/{blurred['face_id']}/move", json={"target_person_id": eileen})
    assert thumbnail_of(client, eileen) == small["face_id"]
    # A better face arrives by hand: it becomes the thumbnail.
    back = client.put(f"/faces/{sharp['face_id']}/move", json={"target_person_id": eileen})
    assert back.json["data"]["source_person_deleted"] is True
    assert thumbnail_of(client, eileen) == sharp["face_id"]
    # A worse face arriving elsewhere changes nothing there either.
    client.put(f"/faces/{small['face_id']}/move", json={"target_person_id": grace["person_id"]})
    assert thumbnail_of(client, grace["person_id"]) == grace["face_id"]
    assert thumbnail_of(client, eileen) == sharp["face_id"]


def test_thumbnail_follows_the_best_face_when_its_image_is_deleted(client):
    blurred = only_face(upload(client, photos.blurred(photos.astronaut_rgb(), 2)))
    sharp = only_face(upload(client, photos.astronaut_jpeg()))
    small = only_face(upload(client, photos.scaled(photos.astronaut_rgb(), 0.6)))
    eileen = sharp["person_id"]
    assert thumbnail_of(client, eileen) == sharp["face_id"]
    sharp_image = client.get(f"/faces/{sharp['face_id']}/info").json["data"]["image_id"]
    deleted = client.delete(f"/images/{sharp_image}").json["data"]
    assert deleted["persons_deleted"] == []
    assert thumbnail_of(client, eileen) == small["face_id"]
    assert small["quality_score"] > blurred["quality_score"]


def test_thumbnail_follows_a_better_face_a_recluster_brings(store):
    client = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    blurred = only_face(upload(client, photos.blurred(photos.astronaut_rgb(), 2)))
    small = only_face(upload(client, photos.scaled(photos.astronaut_rgb(), 0.6)))
    eileen = small["person_id"]
    assert blurred["person_id"] == eileen
    # Uploaded with a zero tolerance, the sharp photo gets a person of its own.
    strict = create_app({**BASE_CONFIG, "FACE_RECOGNITION_TOLERANCE": 0.0}, store=store,
                        environ={}).test_client()
    sharp = only_face(upload(strict, photos.astronaut_jpeg()))
    assert sharp["person_id"] != eileen
    assert thumbnail_of(client, eileen) == small["face_id"]

    result = client.get("/cluster/").json["data"]
    assert result["faces_moved"] == 1 and result["persons_deleted"] == 1
    check_invariants(store)
    assert client.get(f"/faces/{sharp['face_id']}/info").json["data"]["person_id"] == eileen
    assert thumbnail_of(client, eileen) == sharp["face_id"]


def test_thumbnail_leaves_with_a_face_a_recluster_takes_away(client):
    a1 = only_face(upload(client, photos.astronaut_jpeg()))
    a2 = only_face(upload(client, photos.scaled(photos.astronaut_rgb(), 0.6)))
    grace = only_face(upload(client, photos.hopper_jpeg()))
    eileen = a1["person_id"]
    # Grace put into Eileen by hand brings the best face: Eileen's thumbnail is now Grace.
    client.put(f"/faces/{grace['face_id']}/move", json={"target_person_id": eileen})
    assert thumbnail_of(client, eileen) == grace["face_id"]

    result = client.get("/cluster/?preserve_manual=false").json["data"]
    assert result["persons_created"] == 1
    info = client.get(f"/faces/{grace['face_id']}/info").json["data"]
    assert info["person_id"] != eileen
    assert thumbnail_of(client, info["person_id"]) == grace["face_id"]
    best = max((a1, a2), key=lambda f: f["quality_score"])
    assert thumbnail_of(client, eileen) == best["face_id"]
