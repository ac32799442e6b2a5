"""Failed and crashed uploads: what a failure undoes at once and what ``repair.run`` finishes.

Failures are injected by wrapping the real store; nothing of ours is mocked.
"""

from __future__ import annotations

import datetime as dt
import io

import pytest

from app import create_app
from services import repair
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import assert_error
from tests.conftest import persons
from tests.conftest import upload
from tests.invariants import check_invariants


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


def test_repair_command_reports_what_it_did(app):
    result = app.test_cli_runner().invoke(args=["gallery", "repair"])
    assert result.exit_code == 0, result.output
    assert '"uploads_undone": []' in result.output
