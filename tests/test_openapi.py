"""The contract: /openapi.json covers every route, /docs works offline, and the app keeps to
the document (schemathesis, a short run here; `make fuzz` runs a longer one on a server)."""

from __future__ import annotations

import io
import os
import re
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings
from schemathesis.specs.openapi.checks import allow_header_conformance
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app import create_app
from tests.conftest import BASE_CONFIG
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import create
from tests.photos import blank_jpeg

#: Generated requests per operation; `make fuzz` runs many more against a live server.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
FILE_OPERATIONS = {"POST /images/upload", "POST /images/upload-multiple",
                   "POST /images/search-by-image"}
#: Valid by the schema, refused by the stored state with the 400 issue 14 asks for (a box
#: outside the image, a rejection from a person the face is not in, another person's face as
#: a cover); schemathesis.toml leaves them out of `make fuzz`'s acceptance check too.
STATE_CHECKED = {"POST /images/{image_id}/faces", "PUT /faces/{face_id}/reject",
                 "PUT /persons/{person_id}"}
#: Routes that serve the contract itself rather than the API.
OWN_ENDPOINTS = {"openapi.spec", "openapi.docs", "openapi.swagger_ui_oauth_redirect",
                 "docs_assets"}


def test_the_document_covers_every_registered_route(app):
    document = app.test_client().get("/openapi.json").json
    assert document["openapi"] == "3.1.0"
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in OWN_ENDPOINTS:
            continue
        path = re.sub(r"<(?:[^<:]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is None:
                missing.append(f"{method} {path}")
            else:
                assert operation["summary"], f"{method} {path} has no summary"
                assert "400" in operation["responses"] and "500" in operation["responses"]
    assert not missing, f"routes missing from /openapi.json: {missing}"


def test_the_error_envelope_is_documented(app):
    document = app.test_client().get("/openapi.json").json
    error = document["components"]["schemas"]["Error"]
    assert set(error["required"]) >= {"success", "error", "error_type", "code", "timestamp",
                                       "request_id"}
    upload = document["paths"]["/images/upload"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"200", "201", "400", "413", "415"} <= set(upload["responses"])


def test_docs_page_works_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(not a.startswith(("http:", "https:", "//")) for a in assets), assets
    for asset in assets:
        served = client.get(asset)
        try:
            assert served.status_code == 200, asset
            assert served.get_data()
        finally:
            served.close()


def test_the_root_links_the_docs_and_the_document(client):
    about = client.get("/").json["data"]
    assert about["docs"] == "/docs" and about["openapi"] == "/openapi.json"
    assert "POST /albums/" in about["endpoints"]["albums"]


def test_created_resources_answer_201_with_their_location(client):
    album = client.post("/albums/", json={"name": "Trip"})
    assert album.status_code == 201
    assert client.get(album.headers["Location"]).json["data"]["name"] == "Trip"
    section = client.post("/sections/", json={"name": "Day 1"})
    assert client.get(section.headers["Location"]).json["data"]["_id"] == section.json["data"][
        "_id"]
    image = client.post("/images/upload", data={"file": (io.BytesIO(blank_jpeg()), "a.jpg")},
                        content_type="multipart/form-data")
    assert image.status_code == 201
    assert client.get(image.headers["Location"]).json["data"]["_id"] == image.json["data"][
        "image_id"]


@pytest.mark.parametrize("path", ["/albums/", "/sections/"])
def test_unknown_fields_get_the_same_answer_on_create_and_update(client, path):
    created = create(client, path, name="Kept")
    on_create = client.post(path, json={"name": "X", "colour": "red"})
    on_update = client.put(f"{path}{created['_id']}", json={"colour": "red"})
    for answer in (on_create, on_update):
        assert_error(answer, 400, "ValidationError")
        assert answer.json["details"]["field"] == "colour"
    assert client.get(path).json["data"]["total"] == 1


def test_a_missing_field_names_itself(client):
    answer = client.put(f"/persons/{MISSING}/rename", json={})
    assert_error(answer, 400, "ValidationError")
    assert answer.json["details"]["field"] == "name"
    assert "'name'" in answer.json["error"]


def test_two_files_in_one_upload_are_refused(client):
    photo = blank_jpeg()
    answer = client.post("/images/upload", content_type="multipart/form-data", data={
        "file": [(io.BytesIO(photo), "a.jpg"), (io.BytesIO(photo + b"x"), "b.jpg")]})
    assert_error(answer, 400, "ValidationError")
    assert "upload-multiple" in answer.json["error"]
    assert client.get("/images/").json["data"]["total"] == 0


def test_reclustering_calls_its_threshold_tolerance_both_ways(client):
    answer = client.post("/cluster/", json={"tolerance": 0.5})
    assert answer.status_code == 200
    assert answer.json["data"]["tolerance"] == 0.5
    assert "eps" not in answer.json["data"]


# -- schemathesis: every operation, generated requests, every answer against the document ----
# An app of its own on the embedded store, built at import: schemathesis' pytest plugin
# collects from a schema object (its fixture-based loader breaks on pytest 9).

FUZZ_DIR = tempfile.mkdtemp(prefix="face-gallery-fuzz-")
fuzzed = schemathesis.openapi.from_wsgi(
    "/openapi.json", create_app({**BASE_CONFIG, "DATA_DIR": FUZZ_DIR}, environ={}))


@fuzzed.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_to_the_document(case):
    """No 5xx, and every answer (status, content type, headers, body) as documented."""
    # Flask answers OPTIONS itself (CORS preflights) with the methods of every rule the path
    # matches: /images/upload also matches /images/{image_id}, so Allow lists GET there too.
    excluded = [allow_header_conformance]
    if case.operation.label in FILE_OPERATIONS | STATE_CHECKED:
        # What is in a file (an image? with a face?) is beyond a schema: random bytes are
        # refused with a documented 400 (422 for a search photo with no face).
        excluded.append(positive_data_acceptance)
    case.call_and_validate(excluded_checks=excluded)


def test_an_empty_filter_filters_nothing_and_a_bad_one_is_named(client):
    create(client, "/albums/", name="A")
    assert client.get("/images/?album_id=&person_id=").status_code == 200
    assert client.get("/sections/?album_id=").json["data"]["total"] == 0
    answer = client.get("/images/?album_id=nope")
    assert_error(answer, 400, "ValidationError")
    assert answer.json["details"] == {"field": "album_id", "location": "query",
                                      "errors": {"query": {"album_id": [
                                          "Must be a 24-hex id or empty."]}}}


def test_json_booleans_are_true_or_false_only(client):
    assert_error(client.post("/cluster/", json={"async": 0}), 400, "ValidationError")
    assert_error(client.post("/cluster/", json={"preserve_manual": "yes"}), 400,
                 "ValidationError")
    assert client.post("/cluster/", json={"preserve_manual": False}).status_code == 200


def test_malformed_json_is_a_400_that_says_so(client):
    answer = client.post("/albums/", data="{", content_type="application/json")
    assert_error(answer, 400, "ValidationError")
    assert "Invalid JSON" in answer.json["error"]
    assert answer.json["details"]["location"] == "json"
