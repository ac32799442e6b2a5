"""Uploading photos: faces found and given persons, duplicates, formats, EXIF, bad files.

Real dlib on real photos, on every storage backend; the ``client`` fixture checks the
invariants after each test (faces, persons and images agree; no empty person; no orphan).
"""

from __future__ import annotations

import datetime as dt
import io
import threading

import pytest

from app import create_app
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import persons
from tests.conftest import upload
from tests.invariants import check_invariants

#: For checks that answer before anything is stored (Flask's size limit, the decoder's pixel
#: limit): they run on mongomock only.
one_backend = pytest.mark.parametrize("store", ["mongomock"], indirect=True)


def test_same_person_twice_is_one_person(client):
    first = upload(client, photos.astronaut_jpeg(), "a.jpg")
    assert first["faces_detected"] == 1 and first["persons_created"] == 1
    assert first["duplicate"] is False and first["processing_time"] >= 0
    second = upload(client, photos.mirrored(photos.astronaut_rgb()), "a-mirror.jpg")
    assert second["persons_created"] == 0
    assert second["faces"][0]["person_id"] == first["faces"][0]["person_id"]
    [person] = persons(client)
    assert person["face_count"] == 2 and person["image_count"] == 2
    assert person["name"] == "Person 1"


def test_two_people_are_two_persons(client):
    a = upload(client, photos.astronaut_jpeg(), "a.jpg")
    h = upload(client, photos.hopper_jpeg(), "h.jpg")
    assert h["persons_created"] == 1
    assert a["faces"][0]["person_id"] != h["faces"][0]["person_id"]
    assert {p["name"] for p in persons(client)} == {"Person 1", "Person 2"}


def test_group_photo_faces_go_to_their_persons(client):
    a = upload(client, photos.astronaut_jpeg(), "a.jpg")
    h = upload(client, photos.hopper_jpeg(), "h.jpg")
    group = upload(client, photos.group_photo(), "group.jpg")
    assert group["faces_detected"] == 2 and group["persons_created"] == 0
    lefts = [f["face_location"]["left"] for f in group["faces"]]
    assert lefts == sorted(lefts)
    assert {f["person_id"] for f in group["faces"]} == {a["faces"][0]["person_id"],
                                                        h["faces"][0]["person_id"]}
    detail = client.get(f"/images/{group['image_id']}").json["data"]
    assert len(detail["persons"]) == 2
    assert all(f["person_name"] for f in detail["faces"])


def test_photo_without_faces_is_stored(client):
    result = upload(client, photos.blank_jpeg(), "sky.jpg")
    assert result["faces_detected"] == 0 and result["persons_created"] == 0
    assert result["faces"] == []
    listed = client.get("/images/").json["data"]
    assert listed["total"] == 1 and listed["images"][0]["faces"] == []
    stats = client.get("/stats/").json["data"]
    assert stats["images_without_faces"] == 1 and stats["images_with_faces"] == 0


@pytest.mark.not_on_standin  # image geometry; test_exif_is_extracted stores EXIF there
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_photo_still_finds_its_face(client, orientation):
    data = photos.with_exif_orientation(photos.hopper_rgb(), orientation)
    result = upload(client, data, "rotated.jpg")
    assert result["faces_detected"] == 1
    height, width = photos.hopper_rgb().shape[:2]
    assert (result["width"], result["height"]) == (width, height)  # stored upright


def test_duplicate_upload_returns_the_existing_image(client):
    first = upload(client, photos.astronaut_jpeg(), "a.jpg")
    again = client.post("/images/upload", data={
        "file": (io.BytesIO(photos.astronaut_jpeg()), "copy.jpg")},
        content_type="multipart/form-data")
    assert again.status_code == 200
    data = again.json["data"]
    assert data["duplicate"] is True and data["image_id"] == first["image_id"]
    assert data["persons_created"] == 0 and data["faces_detected"] == 1
    assert client.get("/stats/").json["data"]["total_faces"] == 1


def test_exif_is_extracted(client):
    data = photos.with_exif(photos.hopper_rgb(), taken_at=dt.datetime(2019, 7, 4, 12, 30),
                            make="Canon", model="EOS 5D", gps=(48.8584, 2.2945, None))
    result = upload(client, data, "paris.jpg")
    detail = client.get(f"/images/{result['image_id']}").json["data"]
    assert detail["taken_at"] == "2019-07-04T12:30:00.000Z"
    assert detail["exif"]["camera_make"] == "Canon"
    assert detail["exif"]["gps"]["latitude"] == pytest.approx(48.8584, abs=1e-3)
    inside = client.get("/images/?date_from=2019-07-01&date_to=2019-07-31").json["data"]
    assert inside["total"] == 1
    outside = client.get("/images/?date_from=2020-01-01").json["data"]
    assert outside["total"] == 0


@pytest.mark.not_on_standin  # decoding: four new pictures for dlib, one ordinary upload each
def test_formats_are_decided_by_bytes(client):
    assert upload(client, photos.as_png(photos.hopper_rgb()), "h.png")["faces_detected"] == 1
    assert upload(client, photos.as_webp(photos.astronaut_rgb()), "a.webp")["faces_detected"] \
        == 1
    gif = photos.animated_gif([photos.hopper_rgb(), photos.blank_rgb()])
    assert upload(client, gif, "anim.gif")["faces_detected"] == 1
    # A PNG named .jpg is still a PNG: accepted.
    assert upload(client, photos.as_png(photos.blank_rgb()), "wrong-name.jpg")["faces_detected"] \
        == 0


@pytest.mark.parametrize("payload, filename", [
    (b"this is plain text, not a picture", "x.jpg"),
    (b"", "empty.jpg"),
    (photos.astronaut_jpeg()[:2000], "truncated.jpg"),
])
def test_bad_files_are_400_and_leave_nothing(client, payload, filename):
    body = upload(client, payload, filename, expect=400)
    assert body["error_type"] == "FileValidationError"
    assert client.get("/stats/").json["data"]["total_images"] == 0


@one_backend
def test_pixel_bomb_is_400(store):
    app = create_app({**BASE_CONFIG, "IMAGE_MAX_PIXELS": 1_000_000}, store=store, environ={})
    response = app.test_client().post("/images/upload", data={
        "file": (io.BytesIO(photos.pixel_bomb_png(2000)), "bomb.png")},
        content_type="multipart/form-data")
    assert_error(response, 400, "FileValidationError")


@one_backend
def test_too_large_upload_is_413(store):
    app = create_app({**BASE_CONFIG, "MAX_CONTENT_LENGTH": 20_000}, store=store, environ={})
    response = app.test_client().post("/images/upload", data={
        "file": (io.BytesIO(photos.astronaut_jpeg()), "big.jpg")},
        content_type="multipart/form-data")
    assert_error(response, 413, "FileSizeError")
    assert "MB" in response.json["error"]


def test_upload_request_errors(client):
    assert_error(client.post("/images/upload", data={}, content_type="multipart/form-data"),
                 400, "ValidationError")
    assert_error(client.post("/images/upload", json={"file": "x"}), 415,
                 "UnsupportedMediaTypeError")
    assert_error(client.post("/images/upload", data={
        "file": (io.BytesIO(photos.blank_jpeg()), "b.jpg"), "album_id": MISSING},
        content_type="multipart/form-data"), 404, "DocumentNotFoundError")
    assert_error(client.post("/images/upload", data={
        "file": (io.BytesIO(photos.blank_jpeg()), "b.jpg"), "section_id": "nope"},
        content_type="multipart/form-data"), 400, "ValidationError")
    assert client.get("/stats/").json["data"]["total_images"] == 0


def test_upload_multiple_reports_each_file(client):
    response = client.post("/images/upload-multiple", data={"files": [
        (io.BytesIO(photos.astronaut_jpeg()), "a.jpg"),
        (io.BytesIO(b"not an image"), "bad.jpg"),
        (io.BytesIO(photos.hopper_jpeg()), "h.jpg"),
    ]}, content_type="multipart/form-data")
    assert response.status_code == 207  # one file failed
    data = response.json["data"]
    assert (data["total_images"], data["successful_uploads"], data["failed_uploads"]) == (3, 2, 1)
    assert data["total_faces_detected"] == 2 and data["persons_created"] == 2
    bad = data["results"][1]
    assert bad["success"] is False and bad["error_type"] == "FileValidationError"
    assert data["processing_time"] >= 0
    assert_error(client.post("/images/upload-multiple", data={},
                             content_type="multipart/form-data"), 400, "ValidationError")


def test_upload_into_a_person_deleted_meanwhile_brings_it_back(store):
    """The person chosen from the index is deleted before the face lands (another worker)."""
    app = create_app(dict(BASE_CONFIG), store=store, environ={})
    client = app.test_client()
    first = upload(client, photos.astronaut_jpeg())
    person_id = first["faces"][0]["person_id"]
    app.extensions["face_gallery"].sync_index()
    # Another worker deletes the only face and its person; this worker's index has not seen it.
    store.delete_faces([first["faces"][0]["face_id"]])
    store.delete_person(person_id)
    store.set_image_fields(first["image_id"], {"face_count": 0})
    again = upload(client, photos.mirrored(photos.astronaut_rgb()))
    assert again["faces"][0]["person_id"] == person_id
    restored = client.get(f"/persons/{person_id}").json["data"]
    assert restored["face_count"] == 1 and restored["name"].startswith("Person ")


def test_the_same_photo_uploaded_twice_at_once_is_stored_once(app, store):
    results = []
    barrier = threading.Barrier(2)

    def send():
        client = app.test_client()
        barrier.wait()
        response = client.post("/images/upload", data={
            "file": (io.BytesIO(photos.hopper_jpeg()), "h.jpg")},
            content_type="multipart/form-data")
        results.append((response.status_code, response.json["data"]))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(code for code, _ in results) == [200, 201]
    assert len({data["image_id"] for _, data in results}) == 1
    check_invariants(store)
    assert store.count("images") == 1 and store.count("faces") == 1


def test_batch_file_names_are_cleaned_in_every_result(client):
    response = client.post("/images/upload-multiple", data={"files": [
        (io.BytesIO(photos.blank_jpeg()), "sky\x1b[0m.jpg"),
        (io.BytesIO(b"not an image"), "bad\x00\u202e.jpg"),
    ]}, content_type="multipart/form-data")
    assert response.status_code == 207
    assert [r["filename"] for r in response.json["data"]["results"]] == ["sky[0m.jpg",
                                                                        "bad.jpg"]
