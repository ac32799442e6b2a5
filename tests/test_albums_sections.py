"""Albums and sections CRUD on every backend, with their error cases."""

from __future__ import annotations

import pytest

from tests.conftest import BASE_CONFIG
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import create
from tests.conftest import make_store

#: For request-shape checks that answer before any query: they run on mongomock only.
one_backend = pytest.mark.parametrize("store", ["mongomock"], indirect=True)


def test_album_crud(client):
    album = create(client, "/albums/", name="  Summer 2024 ", description="Beach trip")
    assert album["name"] == "Summer 2024"
    assert album["album_id"] == album["_id"]
    assert album["image_count"] == 0

    listed = client.get("/albums/").json["data"]
    assert [a["_id"] for a in listed["albums"]] == [album["_id"]]
    assert listed["total"] == 1

    updated = client.put(f"/albums/{album['_id']}", json={"name": "Summer"}).json["data"]
    assert updated["name"] == "Summer" and updated["description"] == "Beach trip"
    assert client.get(f"/albums/{album['_id']}").json["data"]["name"] == "Summer"

    deleted = client.delete(f"/albums/{album['_id']}").json["data"]
    assert deleted == {"deleted_album_id": album["_id"], "images_unassigned": 0,
                       "sections_detached": 0}
    assert_error(client.get(f"/albums/{album['_id']}"), 404, "DocumentNotFoundError")


@one_backend
@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": "   "}, {"name": 5}, {"name": "x" * 201},
    {"name": "ok", "description": "d" * 2001}, {"name": "ok", "description": 3},
])
def test_album_rejects_bad_fields(client, body):
    assert_error(client.post("/albums/", json=body), 400, "ValidationError")
    assert client.get("/albums/").json["data"]["total"] == 0


def test_album_name_limits_are_inclusive(client):
    assert create(client, "/albums/", name="x" * 200, description="d" * 2000)["name"] == "x" * 200


@one_backend
def test_album_bodies_must_be_json_objects(client):
    assert_error(client.post("/albums/", data="name=x",
                             content_type="application/x-www-form-urlencoded"),
                 415, "UnsupportedMediaTypeError")
    assert_error(client.post("/albums/", data="[1, 2]", content_type="application/json"),
                 400, "ValidationError")
    assert_error(client.post("/albums/", data="{not json", content_type="application/json"),
                 400, "ValidationError")


def test_album_update_errors(client):
    album = create(client, "/albums/", name="A")
    assert_error(client.put(f"/albums/{album['_id']}", json={}), 400, "ValidationError")
    assert_error(client.put(f"/albums/{album['_id']}", json={"colour": "red"}), 400,
                 "ValidationError")
    assert_error(client.put(f"/albums/{MISSING}", json={"name": "B"}), 404,
                 "DocumentNotFoundError")
    assert_error(client.put("/albums/not-an-id", json={"name": "B"}), 400, "ValidationError")
    assert_error(client.delete(f"/albums/{MISSING}"), 404, "DocumentNotFoundError")
    assert_error(client.get("/albums/123"), 400, "ValidationError")


def test_unknown_id_names_it(client):
    body = client.get(f"/albums/{MISSING}").json
    assert MISSING in body["error"]


def test_section_crud_inside_album(client):
    album = create(client, "/albums/", name="Trip")
    section = create(client, "/sections/", name="Beach", album_id=album["_id"])
    assert section["album_id"] == album["_id"] and section["image_count"] == 0
    standalone = create(client, "/sections/", name="Misc")
    assert standalone["album_id"] is None

    in_album = client.get(f"/sections/?album_id={album['_id']}").json["data"]["sections"]
    assert [s["_id"] for s in in_album] == [section["_id"]]
    assert client.get("/sections/").json["data"]["total"] == 2
    assert [s["_id"] for s in client.get(f"/albums/{album['_id']}").json["data"]["sections"]] \
        == [section["_id"]]

    moved = client.put(f"/sections/{standalone['_id']}", json={"album_id": album["_id"]})
    assert moved.json["data"]["album_id"] == album["_id"]
    detached = client.put(f"/sections/{standalone['_id']}", json={"album_id": None})
    assert detached.json["data"]["album_id"] is None

    deleted = client.delete(f"/albums/{album['_id']}").json["data"]
    assert deleted["sections_detached"] == 1
    assert client.get(f"/sections/{section['_id']}").json["data"]["album_id"] is None

    assert client.delete(f"/sections/{section['_id']}").json["data"] == {
        "deleted_section_id": section["_id"], "images_unassigned": 0}
    assert_error(client.get(f"/sections/{section['_id']}"), 404, "DocumentNotFoundError")


def test_section_errors(client):
    assert_error(client.post("/sections/", json={"name": "S", "album_id": MISSING}), 404,
                 "DocumentNotFoundError")
    assert_error(client.post("/sections/", json={"name": "S", "album_id": "zz"}), 400,
                 "ValidationError")
    assert_error(client.post("/sections/", json={"name": "S", "album_id": 7}), 400,
                 "ValidationError")
    assert_error(client.post("/sections/", json={"name": ""}), 400, "ValidationError")
    assert_error(client.get(f"/sections/?album_id={MISSING}"), 404, "DocumentNotFoundError")
    section = create(client, "/sections/", name="S")
    assert_error(client.put(f"/sections/{section['_id']}", json={"album_id": MISSING}), 404,
                 "DocumentNotFoundError")
    assert_error(client.delete(f"/sections/{MISSING}"), 404, "DocumentNotFoundError")
    assert client.get("/sections/").json["data"]["total"] == 1


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


def test_embedded_store_persists_across_restarts(tmp_path):
    from app import create_app

    config = {**BASE_CONFIG, "MONGODB_URI": "", "DATA_DIR": str(tmp_path / "data")}
    first = create_app(config, environ={}).test_client()
    album_id = first.post("/albums/", json={"name": "Kept"}).json["data"]["_id"]

    second = create_app(config, environ={}).test_client()
    assert second.get(f"/albums/{album_id}").json["data"]["name"] == "Kept"
    make_store("embedded", tmp_path)  # leaves the folder empty again for tmp cleanup


@one_backend
@pytest.mark.parametrize("field", ["name", "description"])
@pytest.mark.parametrize("bad", ["Bob\x00Smith", "a\rb", "\x1b[31mred", "x\u202ey", "a\u2029b"])
def test_text_with_control_characters_is_400_naming_the_field(client, field, bad):
    if field == "description" and bad == "a\rb":
        # A lone CR (old Mac text) is a line break in a description, as CR LF is.
        assert create(client, "/albums/", name="Trip", description=bad)["description"] == "a\nb"
        return
    album = create(client, "/albums/", name="Trip", description="Kept")
    section = create(client, "/sections/", name="Day 1", description="Kept")
    body = {"name": "ok", field: bad}
    for response in (client.post("/albums/", json=body),
                     client.put(f"/albums/{album['_id']}", json={field: bad}),
                     client.post("/sections/", json=body),
                     client.put(f"/sections/{section['_id']}", json={field: bad})):
        assert_error(response, 400, "ValidationError")
        assert response.json["details"]["field"] == field
    [kept_album] = client.get("/albums/").json["data"]["albums"]
    [kept_section] = client.get("/sections/").json["data"]["sections"]
    assert (kept_album["name"], kept_album["description"]) == ("Trip", "Kept")
    assert (kept_section["name"], kept_section["description"]) == ("Day 1", "Kept")


@one_backend
def test_descriptions_may_span_lines_and_names_may_not(client):
    album = create(client, "/albums/", name="Trip", description="Day 1\r\n\tbeach\nDay 2")
    assert album["description"] == "Day 1\n\tbeach\nDay 2"
    section = create(client, "/sections/", name="S", description="a\nb")
    assert section["description"] == "a\nb"
    assert_error(client.post("/albums/", json={"name": "Day 1\nDay 2"}), 400, "ValidationError")
