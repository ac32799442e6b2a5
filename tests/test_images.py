"""Images through the API: list, detail, files, filing in albums and sections, delete.

Real dlib on real photos, on every storage backend, with the invariants checked after each test.
"""

from __future__ import annotations

import io

from PIL import Image

from tests import photos
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import persons
from tests.conftest import upload


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
    assert max(Image.open(io.BytesIO(thumb.data)).size) <= 200

    for bad in ("limit=0", "limit=501", "offset=-1", "limit=abc", "date_from=yesterday"):
        assert_error(client.get(f"/images/?{bad}"), 400, "ValidationError")
    assert_error(client.get(f"/images/?person_id={MISSING}"), 404, "DocumentNotFoundError")
    assert_error(client.get(f"/images/{MISSING}"), 404, "DocumentNotFoundError")
    assert_error(client.get("/images/xyz/file"), 400, "ValidationError")


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


def test_file_names_typed_are_checked_and_sent_ones_cleaned(client):
    """A file name in a JSON update is refused with a control character in it; the name a
    browser sends with the file is stored without them (docs/api.md)."""
    image = upload(client, photos.blank_jpeg(), "beach\x1b[31m\x00 day\u202e\t.jpg")
    assert image["filename"] == "beach[31m day.jpg"
    path = f"/images/{image['image_id']}"
    assert client.get(path).json["data"]["filename"] == "beach[31m day.jpg"
    for bad in ("x\x00.jpg", "x\r\n.jpg", "x\x1b.jpg", "gpj\u202e.exe", "x\u2028.jpg"):
        response = client.put(path, json={"filename": bad})
        assert_error(response, 400, "ValidationError")
        assert response.json["details"]["field"] == "filename"
    assert client.get(path).json["data"]["filename"] == "beach[31m day.jpg"
    assert client.put(path, json={"filename": "Zoë 🌅.jpg"}).json["data"]["filename"] == (
        "Zoë 🌅.jpg")
