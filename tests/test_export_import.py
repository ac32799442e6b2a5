"""Issue 16, export and import: the people data leaves one gallery as a document and comes
back in another holding the same photos, uploaded before or after; XMP sidecars."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from errors import ValidationError
from services import bookkeeping
from services import people_import
from services.storage import COLLECTIONS
from services.storage import Store
from tests import photos
from tests.conftest import assert_error
from tests.conftest import create
from tests.conftest import upload

NS = {"rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
      "mwg-rs": "http://www.metadataworkinggroup.com/schemas/regions/",
      "stDim": "http://ns.adobe.com/xap/1.0/sType/Dimensions#",
      "stArea": "http://ns.adobe.com/xmp/sType/Area#"}
#: A name with every character XML escapes.
ODD_NAME = 'Eileen <Collins> & "Co" \'E\''


@pytest.fixture(scope="module")
def pictures() -> dict[str, bytes]:
    return {"astronaut": photos.astronaut_jpeg(), "hopper": photos.hopper_jpeg(),
            "group": photos.group_photo()}


def upload_all(client, pictures: dict[str, bytes]) -> dict[str, dict]:
    return {name: upload(client, data, f"{name}.jpg") for name, data in pictures.items()}


def build_gallery(client, pictures: dict[str, bytes]) -> dict[str, str]:
    """Named persons, a rejection, a not-same pair, a cover, flags and filing."""
    up = upload_all(client, pictures)
    astronaut = up["astronaut"]["faces"][0]["person_id"]
    hopper = up["hopper"]["faces"][0]["person_id"]
    group_faces = sorted(up["group"]["faces"], key=lambda f: f["face_location"]["left"])
    assert [f["person_id"] for f in group_faces] == [astronaut, hopper]
    client.put(f"/persons/{astronaut}", json={"name": ODD_NAME, "favorite": True,
                                              "cover_face_id": group_faces[0]["face_id"]})
    client.put(f"/persons/{hopper}", json={"name": "Grace Hopper", "hidden": True,
                                           "birth_date": "1906-12-09"})
    rejected = client.put(f"/faces/{group_faces[1]['face_id']}/reject").json["data"]
    client.post(f"/persons/{astronaut}/not-same", json={"other_person_id": hopper})
    album = create(client, "/albums/", name="Navy")
    section = create(client, "/sections/", name="Portraits", album_id=album["_id"])
    changed = client.put(f"/images/{up['hopper']['image_id']}",
                         json={"album_id": album["_id"], "section_id": section["_id"]})
    assert changed.status_code == 200, changed.json
    return {"astronaut": astronaut, "hopper": hopper, "rejected": rejected["new_person_id"],
            "album": album["_id"], "section": section["_id"]}


def export(client) -> dict:
    response = client.get("/export")
    assert response.status_code == 200
    assert response.is_streamed
    assert "attachment" in response.headers["Content-Disposition"]
    return json.loads(response.get_data())


def people_view(client) -> dict:
    """What must survive: persons (ids, names, flags, counts, cover), where each face is
    (photo and box), corrections, albums, sections and filing."""
    store: Store = client.application.extensions["face_gallery"].store
    images = {i["_id"]: i for i in store.db.images.find({})}
    faces = {f["_id"]: (images[f["image_id"]]["sha256"], f["face_location"]["left"])
             for f in store.db.faces.find({})}
    return {
        "persons": {p["_id"]: (p["name"], p.get("hidden", False), p.get("favorite", False),
                               p.get("birth_date"), p["face_count"],
                               faces.get(p["thumbnail_face_id"]))
                    for p in store.db.persons.find({})},
        "faces": sorted((*faces[f["_id"]], f["person_id"]) for f in store.db.faces.find({})),
        "rejections": sorted((*faces[r["face_id"]], r["person_id"])
                             for r in store.db.rejections.find({})),
        "not_same": sorted((d["a"], d["b"]) for d in store.db.not_same.find({})),
        "albums": sorted((a["_id"], a["name"]) for a in store.db.albums.find({})),
        "sections": sorted((s["_id"], s["name"], s["album_id"])
                           for s in store.db.sections.find({})),
        "filing": sorted((i["sha256"], i["album_id"], i["section_id"]) for i in images.values()),
    }


def snapshot(store: Store) -> dict:
    return {name: sorted(store.db[name].find({}), key=lambda d: str(d["_id"]))
            for name in (*COLLECTIONS, "intents")}


def reset(client) -> None:
    assert client.delete("/reset?confirm=true").status_code == 200


def test_export_reset_upload_import_gives_the_same_people(client, pictures):
    ids = build_gallery(client, pictures)
    before = people_view(client)
    document = export(client)
    assert document["format"] == "face-gallery-export" and document["version"] == 1
    assert {p["id"] for p in document["persons"]} == set(before["persons"])
    assert all(len(f["embedding"]) == 684 for f in document["faces"])  # 512 bytes, base64

    reset(client)
    upload_all(client, pictures)
    assert people_view(client)["persons"].keys().isdisjoint(before["persons"])
    answer = client.post("/import", json=document)
    assert answer.status_code == 200, answer.json
    report = answer.json["data"]
    assert people_view(client) == before
    assert report["persons"]["created"] == 3 and report["images"]["matched"] == 3
    assert report["faces"]["matched"] == 4 and report["faces"]["unmatched"] == 0
    assert report["corrections"]["rejections_applied"] == 1
    assert report["corrections"]["not_same_applied"] == 1
    assert report["albums"]["created"] == 1 and report["images"]["filed"] == 1
    store: Store = client.application.extensions["face_gallery"].store
    faces = list(store.db.faces.find({}))
    assert all(f["assigned_by"] == "manual" and f["assigned_via"] == "import" for f in faces)
    assert store.find_person(ids["rejected"])["name"].startswith("Person ")


def test_importing_again_changes_nothing(client, pictures):
    build_gallery(client, pictures)
    document = export(client)
    reset(client)
    upload_all(client, pictures)
    assert client.post("/import", json=document).status_code == 200
    store: Store = client.application.extensions["face_gallery"].store
    before = snapshot(store)
    again = client.post("/import", json=document).json["data"]
    assert snapshot(store) == before
    assert again["persons"]["created"] == 0 and again["persons"]["updated"] == 0
    assert again["faces"]["assigned"] == 0 and again["faces"]["already_assigned"] == 4
    assert again["corrections"]["rejections_applied"] == 0
    assert again["corrections"]["not_same_applied"] == 0
    assert again["albums"]["created"] == 0 and again["images"]["filed"] == 0


def test_an_import_before_the_upload_is_applied_by_the_upload(client, pictures):
    build_gallery(client, pictures)
    before = people_view(client)
    document = export(client)
    reset(client)
    report = client.post("/import", json=document).json["data"]
    assert report["images"] == {"matched": 0, "missing": 3, "filed": 0}
    assert report["faces"]["pending"] == 4 and report["pending_imports"]["stored"] == 3
    again = client.post("/import", json=document).json["data"]
    assert again["pending_imports"] == {"stored": 0, "unchanged": 3}
    first = upload(client, pictures["astronaut"], "astronaut.jpg")
    astronaut = next(p for p, v in before["persons"].items() if v[0] == ODD_NAME)
    assert first["faces"][0]["person_id"] == astronaut
    assert first["faces"][0]["person_name"] == ODD_NAME
    assert first["imported"]["persons"]["created"] == 1
    upload(client, pictures["hopper"], "hopper.jpg")
    upload(client, pictures["group"], "group.jpg")
    assert people_view(client) == before
    store: Store = client.application.extensions["face_gallery"].store
    assert store.pending_import_ids() == []


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(format="something-else"), "format"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d["faces"][0]["box"].update(top=-1), "faces.0.box.top"),
    (lambda d: d["faces"][0].update(person_id="nope"), "faces.0.person_id"),
    (lambda d: d["persons"][0].update(name=""), "persons.0.name"),
    (lambda d: d["rejections"][0]["face"].update(image_sha256="xyz"),
     "rejections.0.face.image_sha256"),
])
def test_a_bad_document_is_a_400_and_changes_nothing(client, pictures, change, field):
    build_gallery(client, pictures)
    document = export(client)
    change(document)
    store: Store = client.application.extensions["face_gallery"].store
    before = snapshot(store)
    response = client.post("/import", json=document)
    assert_error(response, 400, "ValidationError")
    assert response.json["details"]["field"] == field
    assert snapshot(store) == before


def test_the_service_refuses_what_the_schema_would(store):
    for document, field in (([], ""), ({"format": "face-gallery-export", "version": 1,
                                        "faces": [{"image_sha256": "0" * 64}]},
                                       "faces[0].box")):
        with pytest.raises(ValidationError) as refused:
            people_import.import_document(store, document)
        assert refused.value.details["field"] == field


def test_the_xmp_sidecar_has_each_face_region_and_name(client, pictures):
    up = upload(client, pictures["group"], "group.jpg")
    faces = sorted(up["faces"], key=lambda f: f["face_location"]["left"])
    client.put(f"/persons/{faces[0]['person_id']}/rename", json={"name": ODD_NAME})
    response = client.get(f"/images/{up['image_id']}/xmp")
    assert response.status_code == 200
    assert response.mimetype == "application/rdf+xml"
    root = ET.fromstring(response.data)
    regions = root.find(".//mwg-rs:Regions", NS)
    size = regions.find("mwg-rs:AppliedToDimensions", NS)
    width, height = up["width"], up["height"]
    assert (size.get(f"{{{NS['stDim']}}}w"), size.get(f"{{{NS['stDim']}}}h"),
            size.get(f"{{{NS['stDim']}}}unit")) == (str(width), str(height), "pixel")
    items = regions.findall("mwg-rs:RegionList/rdf:Bag/rdf:li/rdf:Description", NS)
    assert len(items) == 2
    # The name given by hand, escaped and read back intact; "Person N" stays unnamed.
    assert [i.get(f"{{{NS['mwg-rs']}}}Name") for i in items] == [ODD_NAME, None]
    for item, face in zip(items, faces, strict=True):
        assert item.get(f"{{{NS['mwg-rs']}}}Type") == "Face"
        area = item.find("mwg-rs:Area", NS)
        box = face["face_location"]
        got = {k: float(area.get(f"{{{NS['stArea']}}}{k}")) for k in "xywh"}
        assert got["x"] == pytest.approx((box["left"] + box["right"]) / 2 / width, abs=1e-6)
        assert got["y"] == pytest.approx((box["top"] + box["bottom"]) / 2 / height, abs=1e-6)
        assert got["w"] == pytest.approx((box["right"] - box["left"]) / width, abs=1e-6)
        assert got["h"] == pytest.approx((box["bottom"] - box["top"]) / height, abs=1e-6)
        assert area.get(f"{{{NS['stArea']}}}unit") == "normalized"
    assert_error(client.get("/images/5f0c0c0c0c0c0c0c0c0c0c0c/xmp"), 404,
                 "DocumentNotFoundError")


def test_the_commands_export_and_import_the_same_document(client, pictures, tmp_path):
    build_gallery(client, pictures)
    before = people_view(client)
    runner = client.application.test_cli_runner()
    path, sidecars = tmp_path / "people.json", tmp_path / "xmp"
    result = runner.invoke(args=["gallery", "export", str(path), "--xmp", str(sidecars)])
    assert result.exit_code == 0, result.output
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["format"] == "face-gallery-export"
    assert sorted(p.stem for p in sidecars.iterdir()) == sorted(
        i["sha256"] for i in document["images"])
    for sidecar in sidecars.iterdir():
        ET.fromstring(sidecar.read_bytes())
    reset(client)
    upload_all(client, pictures)
    result = runner.invoke(args=["gallery", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["persons"]["created"] == 3
    assert people_view(client) == before


def test_faces_that_match_nothing_are_reported_with_their_reason(client, pictures):
    up = upload(client, pictures["hopper"], "hopper.jpg")
    document = export(client)
    face = document["faces"][0]
    stray = "6570a1a1a1a1a1a1a1a1a1a1"
    document["faces"] = [
        {**face, "box": {"top": 0, "right": 20, "bottom": 20, "left": 0}},  # overlaps nothing
        {**face, "person_id": stray},  # a person the document does not describe
    ]
    report = client.post("/import", json=document).json["data"]
    assert report["faces"]["unmatched_by_reason"] == {"no_face_overlaps_box": 1,
                                                      "person_not_in_document": 1}
    assert [f["reason"] for f in report["faces"]["unmatched_list"]] == [
        "no_face_overlaps_box", "person_not_in_document"]
    store: Store = client.application.extensions["face_gallery"].store
    assert store.get_face(up["faces"][0]["face_id"])["person_id"] == up["faces"][0]["person_id"]


def test_boxes_are_scaled_to_the_size_the_photo_is_stored_at_here(client, pictures):
    up = upload(client, pictures["hopper"], "hopper.jpg")
    document = export(client)
    # As if the exporting gallery had stored the photo at twice the size.
    document["images"][0].update(width=up["width"] * 2, height=up["height"] * 2)
    for face in document["faces"]:
        face["box"] = {side: value * 2 for side, value in face["box"].items()}
    person = document["persons"][0]["id"]
    document["persons"][0]["id"] = document["faces"][0]["person_id"] = "6570a1a1a1a1a1a1a1a1a1a1"
    # A cover named by the same (scaled) box is found too.
    document["persons"][0]["cover_face"] = {k: document["faces"][0][k]
                                            for k in ("image_sha256", "box")}
    report = client.post("/import", json=document).json["data"]
    assert report["faces"]["assigned"] == 1 and report["persons"]["created"] == 1
    store: Store = client.application.extensions["face_gallery"].store
    face = store.get_face(up["faces"][0]["face_id"])
    assert face["person_id"] == "6570a1a1a1a1a1a1a1a1a1a1" != person
    assert bookkeeping.cover_of(store.get_person(face["person_id"])) == face["_id"]


def test_the_contract_documents_export_import_and_xmp(client):
    document = client.get("/openapi.json").json
    assert "application/json" in document["paths"]["/export"]["get"]["responses"]["200"][
        "content"]
    body = document["paths"]["/import"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/ExportDocument")
    assert {"400", "409", "413"} <= set(document["paths"]["/import"]["post"]["responses"])
    xmp = document["paths"]["/images/{image_id}/xmp"]["get"]["responses"]
    assert "application/rdf+xml" in xmp["200"]["content"] and "404" in xmp


def test_the_import_command_says_it_takes_export_documents(client):
    result = client.application.test_cli_runner().invoke(args=["gallery", "import", "--help"])
    assert "face-gallery-export" in result.output
