"""Corrections that stick (issue 14): confirming a face, a person's own fields (hidden,
favorite, birth date, cover face), and images filtered by several persons at once.

Real dlib on real photos, on every storage backend, with the invariants checked after each test.
"""

from __future__ import annotations

import datetime as dt

from tests import photos
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import upload


def listed(client, path: str) -> tuple[list[str], int]:
    response = client.get(path)
    assert response.status_code == 200, response.json
    data = response.json["data"]
    key = "images" if path.startswith("/images") else "persons"
    return [i["_id"] for i in data[key]], data["total"]


# -- confirm ------------------------------------------------------------------------------

def test_confirm_makes_an_automatic_assignment_manual(client):
    first = upload(client, photos.astronaut_jpeg())
    second = upload(client, photos.scaled(photos.astronaut_rgb(), 0.8))
    face_id = second["faces"][0]["face_id"]
    person_id = first["faces"][0]["person_id"]
    assert second["faces"][0]["person_id"] == person_id

    answer = client.put(f"/faces/{face_id}/confirm")
    assert answer.status_code == 200, answer.json
    data = answer.json["data"]
    assert data["face_id"] == face_id and data["person_id"] == person_id
    assert data["is_manual_assignment"] is True and data["assigned_by"] == "manual"
    assert data["was_manual"] is False
    assert client.get(f"/persons/{person_id}").json["data"]["manual_face_count"] == 1

    again = client.put(f"/faces/{face_id}/confirm")
    assert again.status_code == 200 and again.json["data"]["was_manual"] is True
    assert client.get(f"/persons/{person_id}").json["data"]["manual_face_count"] == 1
    # A confirmed face leaving the person takes its manual count with it.
    client.put(f"/faces/{face_id}/move-to-new")
    assert client.get(f"/persons/{person_id}").json["data"]["manual_face_count"] == 0

    assert_error(client.put(f"/faces/{MISSING}/confirm"), 404, "DocumentNotFoundError")
    assert_error(client.put("/faces/nope/confirm"), 400, "ValidationError")


def test_a_confirmed_face_stays_through_reclustering(client):
    upload(client, photos.astronaut_jpeg())
    second = upload(client, photos.scaled(photos.astronaut_rgb(), 0.8))
    face_id = second["faces"][0]["face_id"]
    client.put(f"/faces/{face_id}/confirm")
    done = client.post("/cluster/", json={"preserve_manual": True})
    assert done.status_code == 200, done.json
    face = client.get(f"/faces/{face_id}/info").json["data"]
    assert face["is_manual_assignment"] is True


# -- person fields ------------------------------------------------------------------------

def test_update_person_fields(client):
    first = upload(client, photos.astronaut_jpeg())
    person_id = first["faces"][0]["person_id"]
    summary = client.get("/persons/").json["data"]["persons"][0]
    assert (summary["hidden"], summary["favorite"]) == (False, False)
    assert summary["birth_date"] is None and summary["cover_face_id"] is None

    answer = client.put(f"/persons/{person_id}", json={
        "name": " Eileen ", "favorite": True, "birth_date": "1956-11-19"})
    assert answer.status_code == 200, answer.json
    data = answer.json["data"]
    assert (data["name"], data["favorite"], data["hidden"]) == ("Eileen", True, False)
    assert data["birth_date"] == "1956-11-19" and data["named_by_user"] is True
    detail = client.get(f"/persons/{person_id}").json["data"]
    assert detail["birth_date"] == "1956-11-19" and detail["favorite"] is True
    assert listed(client, "/persons/?q=eil") == ([person_id], 1)

    cleared = client.put(f"/persons/{person_id}", json={"birth_date": None}).json["data"]
    assert cleared["birth_date"] is None and cleared["name"] == "Eileen"
    today = dt.date.today().isoformat()
    assert client.put(f"/persons/{person_id}", json={"birth_date": today}).status_code == 200

    future = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    for body in ({}, {"birth_date": future}, {"birth_date": "1956-02-30"},
                 {"birth_date": "yesterday"}, {"hidden": "yes"}, {"favorite": 1},
                 {"name": ""}, {"name": "x" * 101}, {"colour": "red"},
                 {"cover_face_id": "nope"}, {"cover_face_id": MISSING}):
        assert_error(client.put(f"/persons/{person_id}", json=body), 400, "ValidationError")
    assert client.put(f"/persons/{person_id}", json={"colour": "red"}).json["details"][
        "field"] == "colour"
    assert_error(client.put(f"/persons/{MISSING}", json={"hidden": True}), 404,
                 "DocumentNotFoundError")
    assert client.get(f"/persons/{person_id}").json["data"]["birth_date"] == today


def test_hidden_and_favorite_filters_count_what_they_list(client):
    a = upload(client, photos.astronaut_jpeg())["faces"][0]["person_id"]
    upload(client, photos.scaled(photos.astronaut_rgb(), 0.8))
    h = upload(client, photos.hopper_jpeg())["faces"][0]["person_id"]
    assert listed(client, "/persons/") == ([a, h], 2)

    client.put(f"/persons/{a}", json={"hidden": True})
    assert listed(client, "/persons/") == ([h], 1)
    assert listed(client, "/persons/?include_hidden=true") == ([a, h], 2)
    assert listed(client, "/persons/?include_hidden=true&limit=1&offset=1") == ([h], 2)
    assert listed(client, "/persons/?q=person") == ([h], 1)
    assert client.get(f"/persons/{a}").json["data"]["hidden"] is True  # still readable

    client.put(f"/persons/{a}", json={"favorite": True})
    assert listed(client, "/persons/?favorite=true") == ([], 0)
    assert listed(client, "/persons/?favorite=true&include_hidden=true") == ([a], 1)
    client.put(f"/persons/{a}", json={"hidden": False})
    assert listed(client, "/persons/?favorite=true") == ([a], 1)
    assert listed(client, "/persons/?favorite=true&limit=1&offset=1") == ([], 1)
    assert listed(client, "/persons/?favorite=false") == ([a, h], 2)
    assert_error(client.get("/persons/?include_hidden=maybe"), 400, "ValidationError")
    assert_error(client.get("/persons/?favorite=2"), 400, "ValidationError")


def test_a_cover_face_stays_until_it_leaves_the_person(client):
    first = upload(client, photos.astronaut_jpeg())
    person_id = first["faces"][0]["person_id"]
    blurred = upload(client, photos.blurred(photos.astronaut_rgb(), 1.5))
    assert blurred["faces"][0]["person_id"] == person_id
    best = client.get(f"/persons/{person_id}").json["data"]["thumbnail_face_id"]
    cover = next(f["face_id"] for f in (first["faces"][0], blurred["faces"][0])
                 if f["face_id"] != best)

    data = client.put(f"/persons/{person_id}", json={"cover_face_id": cover}).json["data"]
    assert data["cover_face_id"] == cover and data["thumbnail_face_id"] == cover
    assert data["thumbnail_url"] == f"/faces/{cover}"
    # A better face arriving does not replace a chosen cover.
    third = upload(client, photos.scaled(photos.astronaut_rgb(), 1.2))
    assert third["faces"][0]["person_id"] == person_id
    detail = client.get(f"/persons/{person_id}").json["data"]
    assert detail["cover_face_id"] == cover and detail["thumbnail_face_id"] == cover
    # Another face leaving keeps it.
    client.put(f"/faces/{third['faces'][0]['face_id']}/move-to-new")
    assert client.get(f"/persons/{person_id}").json["data"]["cover_face_id"] == cover
    # null goes back to the best face, and a cover can be chosen again.
    back = client.put(f"/persons/{person_id}", json={"cover_face_id": None}).json["data"]
    assert back["cover_face_id"] is None and back["thumbnail_face_id"] == best
    client.put(f"/persons/{person_id}", json={"cover_face_id": cover})
    # The cover leaving the person ends it: the best face is the thumbnail again.
    client.put(f"/faces/{cover}/move-to-new")
    after = client.get(f"/persons/{person_id}").json["data"]
    assert after["cover_face_id"] is None and after["thumbnail_face_id"] == best

    # Another person's face is refused.
    assert_error(client.put(f"/persons/{person_id}", json={"cover_face_id": cover}), 400,
                 "ValidationError")


# -- several persons at once ------------------------------------------------------------

def test_images_of_several_persons(client):
    eileen_alone = upload(client, photos.astronaut_jpeg())
    grace_alone = upload(client, photos.hopper_jpeg())
    both = upload(client, photos.group_photo())
    eileen_again = upload(client, photos.scaled(photos.astronaut_rgb(), 0.8))
    e = eileen_alone["faces"][0]["person_id"]
    g = grace_alone["faces"][0]["person_id"]
    assert sorted(f["person_id"] for f in both["faces"]) == sorted([e, g])
    ea, ga, b, e2 = (r["image_id"] for r in (eileen_alone, grace_alone, both, eileen_again))
    nobody = upload(client, photos.blank_jpeg())["image_id"]

    # One person: as before.
    assert listed(client, f"/images/?person_id={e}") == ([e2, b, ea], 3)
    # Several: photos with all of them.
    assert listed(client, f"/images/?person_id={e}&person_id={g}") == ([b], 1)
    assert listed(client, f"/images/?person_id={g}&person_id={e}") == ([b], 1)
    assert listed(client, f"/images/?person_id={e}&person_id={e}") == ([e2, b, ea], 3)
    # only: exactly them.
    assert listed(client, f"/images/?person_id={e}&only=true") == ([e2, ea], 2)
    assert listed(client, f"/images/?person_id={e}&only=true&limit=1&offset=1") == ([ea], 2)
    assert listed(client, f"/images/?person_id={e}&person_id={g}&only=true") == ([b], 1)
    assert listed(client, f"/images/?person_id={g}&only=true") == ([ga], 1)
    # exclude: none of them, alone or with the others.
    assert listed(client, f"/images/?exclude_person_id={g}") == ([nobody, e2, ea], 3)
    assert listed(client, f"/images/?exclude_person_id={g}&limit=1&offset=2") == ([ea], 3)
    assert listed(client, f"/images/?exclude_person_id={g}&exclude_person_id={e}") \
        == ([nobody], 1)
    # only alone: exactly no one, the photos without a face.
    assert listed(client, "/images/?only=true") == ([nobody], 1)
    assert listed(client, f"/images/?only=true&exclude_person_id={e}") == ([nobody], 1)
    assert listed(client, f"/images/?person_id={e}&exclude_person_id={g}") == ([e2, ea], 2)
    assert listed(client, f"/images/?person_id={e}&exclude_person_id={e}") == ([], 0)
    assert listed(client, "/images/?person_id=&exclude_person_id=") \
        == ([nobody, e2, b, ga, ea], 5)

    assert_error(client.get(f"/images/?person_id={e}&person_id={MISSING}"), 404,
                 "DocumentNotFoundError")
    assert_error(client.get(f"/images/?exclude_person_id={MISSING}"), 404,
                 "DocumentNotFoundError")
    assert_error(client.get("/images/?exclude_person_id=nope"), 400, "ValidationError")
    assert_error(client.get(f"/images/?person_id={e}&only=perhaps"), 400, "ValidationError")


def test_several_persons_with_album_and_dates(client):
    album = client.post("/albums/", json={"name": "Space"}).json["data"]["_id"]
    summer = upload(client, photos.with_exif(photos.astronaut_rgb(),
                                             taken_at=dt.datetime(2019, 7, 4)), album_id=album)
    grace = upload(client, photos.hopper_jpeg(), album_id=album)
    both = upload(client, photos.group_photo(), album_id=album)
    loose = upload(client, photos.scaled(photos.astronaut_rgb(), 0.8))
    e = summer["faces"][0]["person_id"]
    g = grace["faces"][0]["person_id"]
    s, b, lo = summer["image_id"], both["image_id"], loose["image_id"]

    assert listed(client, f"/images/?album_id={album}&exclude_person_id={g}") == ([s], 1)
    assert listed(client, f"/images/?album_id={album}&person_id={e}&only=true") == ([s], 1)
    assert listed(client, f"/images/?person_id={e}&only=true") == ([lo, s], 2)
    assert listed(client, f"/images/?person_id={e}&date_to=2019-12-31") == ([s], 1)
    assert listed(client, f"/images/?person_id={e}&person_id={g}&album_id={album}") \
        == ([b], 1)
    assert listed(client, f"/images/?exclude_person_id={e}&date_to=2019-12-31") == ([], 0)
