"""Upload, images, persons and faces through the API, with real dlib on real photos.

Every test runs on each storage backend; the ``client`` fixture checks the invariants after
each one (faces, persons and images agree; no empty person; no orphan).
"""

from __future__ import annotations

import io

import pytest

from tests import photos
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import persons
from tests.conftest import upload


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
    lefts = [f["location"]["left"] for f in group["faces"]]
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
    import datetime as dt

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


def test_pixel_bomb_is_400(store):
    from app import create_app
    from tests.conftest import BASE_CONFIG

    app = create_app({**BASE_CONFIG, "IMAGE_MAX_PIXELS": 1_000_000}, store=store, environ={})
    response = app.test_client().post("/images/upload", data={
        "file": (io.BytesIO(photos.pixel_bomb_png(2000)), "bomb.png")},
        content_type="multipart/form-data")
    assert_error(response, 400, "FileValidationError")


def test_too_large_upload_is_413(store):
    from app import create_app
    from tests.conftest import BASE_CONFIG

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


def test_albums_sections_and_image_filing(client):
    album = client.post("/albums/", json={"name": "Trip"}).json["data"]
    section = client.post("/sections/", json={"name": "Day 1", "album_id": album["_id"]}
                          ).json["data"]
    in_section = upload(client, photos.astronaut_jpeg(), section_id=section["_id"])
    assert in_section["album_id"] == album["_id"]  # the section's album is implied
    loose = upload(client, photos.hopper_jpeg())
    assert loose["album_id"] is None

    assert client.get(f"/albums/{album['_id']}").json["data"]["image_count"] == 1
    listed = client.get(f"/images/?album_id={album['_id']}").json["data"]
    assert [i["_id"] for i in listed["images"]] == [in_section["image_id"]]

    moved = client.put(f"/images/{loose['image_id']}", json={"album_id": album["_id"]})
    assert moved.json["data"]["album"]["name"] == "Trip"
    assert client.get(f"/albums/{album['_id']}").json["data"]["image_count"] == 2
    cleared = client.put(f"/images/{loose['image_id']}", json={"album_id": None})
    assert cleared.json["data"]["album_id"] is None
    assert_error(client.put(f"/images/{loose['image_id']}", json={"album_id": MISSING}), 404,
                 "DocumentNotFoundError")
    assert_error(client.put(f"/images/{loose['image_id']}", json={"owner": "x"}), 400,
                 "ValidationError")

    deleted = client.delete(f"/albums/{album['_id']}").json["data"]
    assert deleted["images_unassigned"] == 1
    assert client.get(f"/sections/{section['_id']}").json["data"]["image_count"] == 1
    assert client.delete(f"/sections/{section['_id']}").json["data"]["images_unassigned"] == 1
    assert client.get(f"/images/{in_section['image_id']}").json["data"]["section_id"] is None


def test_image_list_detail_and_files(client):
    a = upload(client, photos.astronaut_jpeg(), "a.jpg")
    h = upload(client, photos.hopper_jpeg(), "h.jpg")
    listed = client.get("/images/").json["data"]
    assert [i["_id"] for i in listed["images"]] == [h["image_id"], a["image_id"]]
    assert listed["total"] == 2 and listed["limit"] == 50 and listed["offset"] == 0
    first = listed["images"][0]
    assert first["file_url"] == f"/images/{h['image_id']}/file"
    assert "original_image_base64" not in str(listed)
    assert first["faces"][0]["face_location"]["top"] >= 0
    page = client.get("/images/?limit=1&offset=1").json["data"]
    assert [i["_id"] for i in page["images"]] == [a["image_id"]] and page["total"] == 2

    person_id = a["faces"][0]["person_id"]
    only = client.get(f"/images/?person_id={person_id}").json["data"]
    assert [i["_id"] for i in only["images"]] == [a["image_id"]]

    file = client.get(f"/images/{a['image_id']}/file")
    assert file.status_code == 200 and file.mimetype == "image/jpeg"
    assert file.headers["ETag"] and "max-age" in file.headers["Cache-Control"]
    again = client.get(f"/images/{a['image_id']}/file",
                       headers={"If-None-Match": file.headers["ETag"]})
    assert again.status_code == 304
    thumb = client.get(f"/images/{a['image_id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    from PIL import Image

    assert max(Image.open(io.BytesIO(thumb.data)).size) <= 200

    for bad in ("limit=0", "limit=501", "offset=-1", "limit=abc", "date_from=yesterday"):
        assert_error(client.get(f"/images/?{bad}"), 400, "ValidationError")
    assert_error(client.get(f"/images/?person_id={MISSING}"), 404, "DocumentNotFoundError")
    assert_error(client.get(f"/images/{MISSING}"), 404, "DocumentNotFoundError")
    assert_error(client.get("/images/xyz/file"), 400, "ValidationError")


def test_rename_person(client):
    a = upload(client, photos.astronaut_jpeg())
    person_id = a["faces"][0]["person_id"]
    renamed = client.put(f"/persons/{person_id}/rename", json={"name": "  Eileen Collins "})
    assert renamed.json["data"] == {"person_id": person_id, "old_name": "Person 1",
                                    "new_name": "Eileen Collins"}
    assert client.get(f"/persons/{person_id}").json["data"]["name"] == "Eileen Collins"
    found = client.get("/persons/?q=eil").json["data"]
    assert [p["_id"] for p in found["persons"]] == [person_id]
    assert client.get("/persons/?q=zz").json["data"]["total"] == 0
    for body in ({}, {"name": ""}, {"name": "   "}, {"name": "x" * 101}, {"name": 3}):
        assert_error(client.put(f"/persons/{person_id}/rename", json=body), 400,
                     "ValidationError")
    assert_error(client.put(f"/persons/{MISSING}/rename", json={"name": "x"}), 404,
                 "DocumentNotFoundError")


def test_person_list_detail_and_thumbnail(client):
    a = upload(client, photos.astronaut_jpeg())
    upload(client, photos.scaled(photos.astronaut_rgb(), 0.8))
    h = upload(client, photos.hopper_jpeg())
    listed = client.get("/persons/").json["data"]
    assert [p["face_count"] for p in listed["persons"]] == [2, 1]
    by_name = client.get("/persons/?sort=name&order=desc").json["data"]["persons"]
    assert [p["name"] for p in by_name] == ["Person 2", "Person 1"]
    assert_error(client.get("/persons/?sort=age"), 400, "ValidationError")
    assert_error(client.get("/persons/?order=up"), 400, "ValidationError")

    person_id = a["faces"][0]["person_id"]
    detail = client.get(f"/persons/{person_id}?limit=1").json["data"]
    assert detail["faces_total"] == 2 and len(detail["faces"]) == 1
    assert detail["images_total"] == 2 and len(detail["images"]) == 1
    thumb = client.get(f"/persons/{person_id}/thumbnail")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    face = client.get(f"/faces/{h['faces'][0]['face_id']}")
    assert face.status_code == 200 and face.mimetype == "image/jpeg"
    assert listed["persons"][0]["thumbnail_url"].startswith("/faces/")
    assert_error(client.get(f"/faces/{MISSING}"), 404, "DocumentNotFoundError")
    assert_error(client.get(f"/persons/{MISSING}/thumbnail"), 404, "DocumentNotFoundError")


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


def test_delete_image_cleans_faces_and_persons(client):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    h = upload(client, photos.hopper_jpeg())
    gone = client.delete(f"/images/{h['image_id']}").json["data"]
    assert gone == {"deleted_image_id": h["image_id"], "faces_deleted": 1,
                    "persons_deleted": [h["faces"][0]["person_id"]]}
    kept = client.delete(f"/images/{a2['image_id']}").json["data"]
    assert kept["persons_deleted"] == []
    [person] = persons(client)
    assert person["face_count"] == 1 and person["_id"] == a1["faces"][0]["person_id"]
    assert_error(client.get(f"/images/{h['image_id']}"), 404, "DocumentNotFoundError")
    assert_error(client.delete(f"/images/{h['image_id']}"), 404, "DocumentNotFoundError")
    # The same bytes can be uploaded again once deleted.
    assert upload(client, photos.hopper_jpeg())["duplicate"] is False


def test_merge_persons(client):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    split = client.put(f"/faces/{a2['faces'][0]['face_id']}/move-to-new").json["data"]
    target = a1["faces"][0]["person_id"]
    client.put(f"/persons/{target}/rename", json={"name": "Eileen"})
    merged = client.put(f"/persons/{target}/merge",
                        json={"source_person_ids": [split["new_person_id"]]}).json["data"]
    assert merged["faces_moved"] == 1 and merged["persons_deleted"] == [split["new_person_id"]]
    assert merged["name"] == "Eileen" and merged["face_count"] == 2
    assert_error(client.put(f"/persons/{target}/merge", json={"source_person_ids": [target]}),
                 400, "ValidationError")
    assert_error(client.put(f"/persons/{target}/merge", json={"source_person_ids": []}), 400,
                 "ValidationError")
    assert_error(client.put(f"/persons/{target}/merge", json={"source_person_ids": [MISSING]}),
                 404, "DocumentNotFoundError")


def test_merge_that_would_put_one_photo_twice_in_a_person_is_409(client):
    upload(client, photos.astronaut_jpeg())
    upload(client, photos.hopper_jpeg())
    group = upload(client, photos.group_photo())
    left, right = group["faces"]
    response = client.put(f"/persons/{left['person_id']}/merge",
                          json={"source_person_ids": [right["person_id"]]})
    assert_error(response, 409, "ConflictError")
    assert group["image_id"] in response.json["error"]


class _FailingStore:
    """Fault injection: the store fails once at a chosen write, as a crash would stop it."""

    def __init__(self, store, method: str) -> None:
        self._store, self._method = store, method

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if name != self._method:
            return attribute

        def fail(*args, **kwargs):
            raise RuntimeError(f"injected failure in {name}")

        return fail


@pytest.mark.parametrize("method", ["insert_faces", "adjust_person_counts", "set_image_fields"])
def test_failed_upload_leaves_nothing_half_written(store, method):
    from app import create_app
    from tests.conftest import BASE_CONFIG
    from tests.invariants import check_invariants

    good = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    first = upload(good, photos.astronaut_jpeg())
    broken = create_app(dict(BASE_CONFIG), store=_FailingStore(store, method), environ={})
    response = broken.test_client().post("/images/upload", data={
        "file": (io.BytesIO(photos.group_photo()), "group.jpg")},
        content_type="multipart/form-data")
    assert_error(response, 500, "InternalServerError")
    check_invariants(store)
    assert good.get("/stats/").json["data"]["total_images"] == 1
    [person] = persons(good)
    assert person["_id"] == first["faces"][0]["person_id"] and person["face_count"] == 1
    # The same photo uploads cleanly afterwards.
    assert upload(good, photos.group_photo())["faces_detected"] == 2


def test_repair_undoes_an_upload_a_crash_left_pending(store):
    import datetime as dt

    from app import create_app
    from services import repair
    from tests.conftest import BASE_CONFIG
    from tests.invariants import check_invariants

    client = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    kept = upload(client, photos.astronaut_jpeg())
    crashed = upload(client, photos.hopper_jpeg())
    # As if the worker died before marking the upload ready, a long time ago.
    old = dt.datetime(2020, 1, 1)
    store.set_image_fields(crashed["image_id"], {"status": "pending", "created_at": old})
    report = repair.run(store)
    assert report["uploads_undone"] == [crashed["image_id"]]
    check_invariants(store)
    assert [p["_id"] for p in persons(client)] == [kept["faces"][0]["person_id"]]
    assert upload(client, photos.hopper_jpeg())["duplicate"] is False


def test_failed_upload_keeps_deep_pages_right(store):
    """A failure after the image's number was taken leaves a gap that paging skips."""
    from app import create_app
    from tests.conftest import BASE_CONFIG

    client = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    first = upload(client, photos.astronaut_jpeg())
    broken = create_app(dict(BASE_CONFIG), store=_FailingStore(store, "insert_image"),
                        environ={})
    failed = broken.test_client().post("/images/upload", data={
        "file": (io.BytesIO(photos.group_photo()), "g.jpg")}, content_type="multipart/form-data")
    assert failed.status_code == 500
    second = upload(client, photos.hopper_jpeg())
    third = upload(client, photos.blank_jpeg())
    ids = [third["image_id"], second["image_id"], first["image_id"]]
    for offset, expected in enumerate(ids):
        page = client.get(f"/images/?limit=1&offset={offset}").json["data"]
        assert [i["_id"] for i in page["images"]] == [expected] and page["total"] == 3


def test_repair_records_numbers_a_crash_left_unused(store):
    from app import create_app
    from services import repair
    from tests.conftest import BASE_CONFIG

    client = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    first = upload(client, photos.astronaut_jpeg())
    for _ in range(3):
        store.next_seq("images")  # numbers reserved by uploads that died before writing
    second = upload(client, photos.hopper_jpeg())
    assert repair.run(store)["image_numbers_recovered"] == 0  # too recent to tell
    assert store.fill_image_gaps(in_flight=0) == 3
    page = client.get("/images/?limit=1&offset=1").json["data"]
    assert [i["_id"] for i in page["images"]] == [first["image_id"]]
    assert client.get("/images/?limit=1").json["data"]["images"][0]["_id"] == second["image_id"]


def test_uppercase_ids_name_the_same_documents(client):
    album = client.post("/albums/", json={"name": "A"}).json["data"]
    section = client.post("/sections/", json={"name": "S", "album_id": album["_id"]}).json["data"]
    loud_album, loud_section = album["_id"].upper(), section["_id"].upper()
    assert client.get(f"/sections/?album_id={loud_album}").json["data"]["total"] == 1
    assert len(client.get(f"/albums/{loud_album}").json["data"]["sections"]) == 1
    assert client.delete(f"/sections/{loud_section}").status_code == 200
    assert client.delete(f"/albums/{loud_album}").status_code == 200
    assert client.get("/albums/").json["data"]["total"] == 0
    assert client.get("/sections/").json["data"]["total"] == 0


def test_refiling_follows_sections(client):
    a = client.post("/albums/", json={"name": "A"}).json["data"]
    b = client.post("/albums/", json={"name": "B"}).json["data"]
    section = client.post("/sections/", json={"name": "S", "album_id": a["_id"]}).json["data"]
    image = upload(client, photos.astronaut_jpeg(), section_id=section["_id"])
    # Taking the image out of its album also takes it out of that album's section.
    out = client.put(f"/images/{image['image_id']}", json={"album_id": None}).json["data"]
    assert out["album_id"] is None and out["section_id"] is None
    client.put(f"/images/{image['image_id']}", json={"section_id": section["_id"]})
    # A section moved to another album takes its images along.
    client.put(f"/sections/{section['_id']}", json={"album_id": b["_id"]})
    moved = client.get(f"/images/{image['image_id']}").json["data"]
    assert (moved["album_id"], moved["section_id"]) == (b["_id"], section["_id"])
    renamed = client.put(f"/images/{image['image_id']}", json={"filename": "x.jpg"})
    assert renamed.status_code == 200 and renamed.json["data"]["album_id"] == b["_id"]
    assert_error(client.put(f"/images/{image['image_id']}",
                            json={"album_id": a["_id"], "section_id": section["_id"]}),
                 400, "ValidationError")


def test_user_mistakes_in_queries_are_400(client):
    for query in ("/persons/?q=%00", "/persons/?q=" + "x" * 201,
                  "/images/?date_to=9999-12-31T23:59:59-05:00",
                  "/images/?date_from=0001-01-01T00:00:00%2B01:00"):
        assert_error(client.get(query), 400, "ValidationError")
    assert client.get("/persons/?q=(a*").status_code == 200  # regex characters are literal
    assert_error(client.get("/images/search-by-image"), 405, "MethodNotAllowedError")
    assert_error(client.put(f"/faces/{MISSING}/move", json={"target": "x"}), 400,
                 "ValidationError")
    assert "target_person_id" in client.put(f"/faces/{MISSING}/move", json={}).json["error"]


def test_hand_corrections_wait_for_a_running_recluster(client, store):
    import time

    from services import bookkeeping

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


def test_upload_into_a_person_deleted_meanwhile_brings_it_back(store):
    """The person chosen from the index is deleted before the face lands (another worker)."""
    from app import create_app
    from tests.conftest import BASE_CONFIG

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
    import threading

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
    from tests.invariants import check_invariants

    check_invariants(store)
    assert store.count("images") == 1 and store.count("faces") == 1
