"""Corrections that stick: faces drawn by hand (POST /images/{id}/faces) and false faces
deleted (DELETE /faces/{id}), on real photos with real dlib."""

from __future__ import annotations

from services import face_edits
from services import ingest
from tests import photos
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import persons
from tests.conftest import search
from tests.conftest import upload


def draw(client, image_id: str, box: tuple[int, int, int, int], expect: int = 201, **body):
    top, right, bottom, left = box
    response = client.post(f"/images/{image_id}/faces",
                           json={"top": top, "right": right, "bottom": bottom, "left": left,
                                 **body})
    assert response.status_code == expect, response.json
    return response


def as_box(location: dict) -> tuple[int, int, int, int]:
    return location["top"], location["right"], location["bottom"], location["left"]


def test_a_real_face_drawn_again_joins_its_person(client):
    group = upload(client, photos.group_photo(), "group.jpg")
    single = upload(client, photos.astronaut_jpeg(), "astronaut.jpg")
    [face] = single["faces"]
    person = face["person_id"]
    assert person in {f["person_id"] for f in group["faces"]}
    deleted = client.delete(f"/faces/{face['face_id']}")
    assert deleted.status_code == 200, deleted.json
    assert deleted.json["data"]["person_deleted"] is False
    # Drawn over the same pixels, with no person named: the rule finds the same person.
    answer = draw(client, single["image_id"], as_box(face["face_location"]))
    drawn = answer.json["data"]
    assert answer.headers["Location"] == f"/faces/{drawn['face_id']}/info"
    assert drawn["person_id"] == person and drawn["new_person"] is False
    assert drawn["distance"] < 0.3
    assert drawn["is_manual_assignment"] is True and drawn["assigned_by"] == "manual"
    assert client.get(answer.headers["Location"]).json["data"]["face_id"] == drawn["face_id"]
    assert client.get(f"/faces/{drawn['face_id']}").status_code == 200  # its crop
    image = client.get(f"/images/{single['image_id']}").json["data"]
    assert image["face_count"] == 1
    after = client.get(f"/persons/{person}").json["data"]
    assert after["face_count"] == 2 and after["manual_face_count"] == 1
    # A search by the photo finds the drawn face: every index learnt it.
    hits = search(client, photos.astronaut_jpeg(), group_by="face")
    assert drawn["face_id"] in {m["face_id"] for m in hits["matches"]}


def test_a_box_where_nothing_was_detected_makes_a_face(client):
    blank = upload(client, photos.blank_jpeg(), "blank.jpg")
    assert blank["faces_detected"] == 0
    drawn = draw(client, blank["image_id"], (10, 60, 60, 10)).json["data"]
    assert drawn["new_person"] is True and drawn["is_manual_assignment"] is True
    [person] = persons(client)
    assert person["_id"] == drawn["person_id"] and person["manual_face_count"] == 1
    # One person, one face per photo: the same person again in this photo is a conflict.
    again = draw(client, blank["image_id"], (70, 120, 120, 70), 409,
                 person_id=drawn["person_id"])
    assert_error(again, 409, "ConflictError")
    assert client.get(f"/images/{blank['image_id']}").json["data"]["face_count"] == 1


def test_a_drawn_face_goes_to_the_person_named(client):
    hopper = upload(client, photos.hopper_jpeg(), "hopper.jpg")
    person = hopper["faces"][0]["person_id"]
    blank = upload(client, photos.blank_jpeg(), "blank.jpg")
    drawn = draw(client, blank["image_id"], (0, 40, 40, 0), person_id=person).json["data"]
    assert drawn["person_id"] == person and drawn["new_person"] is False
    assert drawn["distance"] is None
    detail = client.get(f"/persons/{person}").json["data"]
    assert detail["face_count"] == 2 and detail["image_count"] == 2
    assert detail["manual_face_count"] == 1


def test_boxes_outside_the_image_or_degenerate_are_refused(client):
    blank = upload(client, photos.blank_jpeg(), "blank.jpg")
    image = client.get(f"/images/{blank['image_id']}").json["data"]
    width, height = image["width"], image["height"]
    for box in [(0, width + 1, 20, 0), (0, 20, height + 1, 0), (10, 10, 50, 40),
                (50, 40, 10, 0), (0, 4, 4, 0)]:
        assert_error(draw(client, blank["image_id"], box, 400), 400, "ValidationError")
    assert_error(client.post(f"/images/{blank['image_id']}/faces", json={"top": 0}), 400,
                 "ValidationError")
    assert_error(draw(client, MISSING, (0, 20, 20, 0), 404), 404, "DocumentNotFoundError")
    assert_error(draw(client, blank["image_id"], (0, 20, 20, 0), 404, person_id=MISSING),
                 404, "DocumentNotFoundError")
    assert client.get(f"/images/{blank['image_id']}").json["data"]["face_count"] == 0
    assert persons(client) == []


def test_deleting_a_face_cleans_its_person_and_image_and_search_forgets_it(client):
    single = upload(client, photos.astronaut_jpeg(), "astronaut.jpg")
    [face] = single["faces"]
    assert search(client, photos.astronaut_jpeg())["total_matches"] == 1
    answer = client.delete(f"/faces/{face['face_id']}")
    assert answer.status_code == 200, answer.json
    result = answer.json["data"]
    assert result["person_deleted"] is True and result["image_face_count"] == 0
    assert persons(client) == []
    assert client.get(f"/persons/{face['person_id']}").status_code == 404
    assert client.get(f"/faces/{face['face_id']}/info").status_code == 404
    assert search(client, photos.astronaut_jpeg())["total_matches"] == 0
    assert_error(client.delete(f"/faces/{face['face_id']}"), 404, "DocumentNotFoundError")
    assert_error(client.delete("/faces/nope"), 400, "ValidationError")


def test_a_deleted_false_face_is_not_detected_again(client, app):
    full = photos.jpeg(photos.astronaut_full_rgb())
    stored = upload(client, full, "full.jpg")
    assert stored["faces_detected"] == 2
    patch = max(stored["faces"], key=lambda f: f["face_location"]["top"])
    client.delete(f"/faces/{patch['face_id']}")
    image = client.get(f"/images/{stored['image_id']}").json["data"]
    assert image["face_count"] == 1
    assert image["suppressed_boxes"] == [patch["face_location"]]
    # The same bytes again answer the stored image: nothing is re-detected.
    assert upload(client, full, "again.jpg", expect=200)["faces_detected"] == 1
    # An analysis of the picture finds the patch again; the write step drops it.
    settings = app.extensions["face_gallery"].settings
    analysis = ingest.analyse_photo(full, ingest.AnalysisOptions.from_settings(settings))
    assert len(analysis.faces) == 2
    kept = face_edits.drop_suppressed(analysis, image["suppressed_boxes"])
    assert [as_box(f["face_location"]) for f in image["faces"]] == [f.box for f in kept.faces]


def test_overlap_is_intersection_over_union():
    assert face_edits.overlap((0, 10, 10, 0), (0, 10, 10, 0)) == 1.0
    assert face_edits.overlap((0, 10, 10, 0), (0, 20, 10, 10)) == 0.0
    assert face_edits.overlap((0, 10, 10, 0), (0, 15, 10, 5)) == 50 / 150
