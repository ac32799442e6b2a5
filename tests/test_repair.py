"""Failed and crashed uploads: what a failure undoes at once and what ``repair.run`` finishes.

Failures are injected by wrapping the real store; nothing of ours is mocked.
"""

from __future__ import annotations

import datetime as dt
import io
import socket
import subprocess
import time

import pytest
from bson import ObjectId

from app import create_app
from services import processes
from services import repair
from services import storage
from services import upkeep
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import assert_error
from tests.conftest import persons
from tests.conftest import search
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


# -- abandoned work found within seconds: the background pass and the upkeep thread -------

def _dead_claimant() -> str:
    """``host:pid`` of a process of this machine that has exited."""
    child = subprocess.Popen(["true"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}"


def _kill_upload(store, image_id: str, claimant: str, *, at: dt.datetime | None = None) -> None:
    """Leave what a worker killed mid-upload leaves: the image pending under its claimant, its
    lease, and a crop written without its face."""
    fields = {"status": "pending", "claimant": claimant}
    if at is not None:
        fields["created_at"] = at
    store.set_image_fields(image_id, fields)
    store.db.upload_leases.insert_one({"_id": image_id, "claimant": claimant,
                                       "taken_at": at or storage.now()})
    store.db.face_crops.insert_one({"_id": storage.new_id(), "image_id": image_id})


def _vectors_of(store, image_id: str) -> list:
    return [storage.embedding_from_bytes(f["embedding"])
            for f in store.faces_of_image(image_id, with_embedding=True)]


def _hits_of(gallery, image_id: str, vectors: list) -> list:
    """This worker's index hits on ``image_id`` near ``vectors`` (after a sync)."""
    index = gallery.sync_index()
    return [hit for vector in vectors for hit in index.nearest(vector, 0.01)
            if hit[2] == image_id]


def test_background_pass_undoes_a_dead_process_upload_at_once(store):
    app = create_app(dict(BASE_CONFIG), store=store, environ={})
    client, gallery = app.test_client(), app.extensions["face_gallery"]
    kept = upload(client, photos.astronaut_jpeg())
    crashed = upload(client, photos.hopper_jpeg())
    vectors = _vectors_of(store, crashed["image_id"])
    assert _hits_of(gallery, crashed["image_id"], vectors)  # this worker's index holds it
    _kill_upload(store, crashed["image_id"], _dead_claimant())  # a second ago, not 10 min

    report = repair.background_pass(store)
    assert report["uploads_undone"] == [crashed["image_id"]]
    check_invariants(store)  # no lease, no crop without its face, persons recounted
    assert _hits_of(gallery, crashed["image_id"], vectors) == []  # no ghost in the index
    matches = search(client, photos.hopper_jpeg())["matches"]
    assert all(m["image_id"] != crashed["image_id"] for m in matches)
    assert [p["_id"] for p in persons(client)] == [kept["faces"][0]["person_id"]]
    assert repair.background_pass(store) is None  # nothing left: the cheap path


def test_background_pass_judges_other_machines_by_their_heartbeat(store):
    client = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    beating = upload(client, photos.astronaut_jpeg())
    silent = upload(client, photos.hopper_jpeg())
    long_ago = dt.datetime(2020, 1, 1)
    store.beat("elsewhere:41", long_ago)
    store.beat("elsewhere:42", long_ago)
    store.db.processes.update_one({"_id": "elsewhere:42"}, {"$set": {
        "seen_at": storage.now() - dt.timedelta(seconds=processes.STALE_BEAT_SECONDS + 5)}})
    _kill_upload(store, beating["image_id"], "elsewhere:41", at=long_ago)
    _kill_upload(store, silent["image_id"], "elsewhere:42")

    report = repair.background_pass(store)
    # A long upload whose process beats is left, however old; a silent one is undone.
    assert report["uploads_undone"] == [silent["image_id"]]
    store.set_image_fields(beating["image_id"], {"status": "ready"})
    store.end_writing(beating["image_id"])
    store.delete_crops_of_image(beating["image_id"])
    store.db.face_crops.insert_many([{"_id": f["_id"], "image_id": beating["image_id"]}
                                     for f in store.faces_of_image(beating["image_id"])])
    check_invariants(store)


def test_a_live_process_long_upload_is_not_undone(store):
    client = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    image = upload(client, photos.hopper_jpeg())
    me = processes.claimant()
    store.beat(me, dt.datetime(2020, 1, 1))
    # Pending for years, by this process, which runs and beats: in flight, not abandoned.
    store.set_image_fields(image["image_id"], {"status": "pending", "claimant": me,
                                               "created_at": dt.datetime(2020, 1, 2)})
    assert repair.background_pass(store) is None
    assert repair.run(store)["uploads_undone"] == []
    # The same pid's beat from a process started after the claim: a later process.
    store.beat(me, dt.datetime(2021, 1, 1))
    assert repair.background_pass(store)["uploads_undone"] == [image["image_id"]]
    check_invariants(store)


def test_the_upkeep_thread_beats_and_repairs_periodically(store):
    app = create_app(dict(BASE_CONFIG), store=store, environ={})
    client, gallery = app.test_client(), app.extensions["face_gallery"]
    crashed = upload(client, photos.hopper_jpeg())
    thread = upkeep.Upkeep(gallery, repair_seconds=0.05, beat_seconds=0.05)
    thread.start()
    try:
        time.sleep(0.3)  # a few passes with nothing to do
        _kill_upload(store, crashed["image_id"], _dead_claimant())
        deadline = time.monotonic() + 10
        while store.find_image(crashed["image_id"]) is not None:
            assert time.monotonic() < deadline, "the upkeep thread never undid the upload"
            time.sleep(0.05)
    finally:
        thread.stop()
    assert processes.claimant() in store.process_beats([processes.claimant()])
    check_invariants(store)


def test_full_repair_removes_crops_without_a_face(store):
    client = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    upload(client, photos.hopper_jpeg())
    # Left by an older version's upload killed between its crops and its faces (no image
    # named), and one just written by an upload that may be about to write its face.
    old = str(ObjectId.from_datetime(dt.datetime(2020, 1, 1)))
    store.db.face_crops.insert_many([{"_id": old}, {"_id": storage.new_id()}])
    assert repair.run(store, dry_run=True)["orphan_crops_removed"] == 1
    assert repair.background_pass(store) is None  # the id scan is for full repairs only
    assert repair.run(store)["orphan_crops_removed"] == 1
    assert store.count("face_crops") == store.count("faces") + 1


def test_repair_command_counts_what_it_did(store):
    app = create_app(dict(BASE_CONFIG), store=store, environ={})
    crashed = upload(app.test_client(), photos.hopper_jpeg())
    _kill_upload(store, crashed["image_id"], _dead_claimant())
    store.db.face_crops.insert_one({"_id": str(ObjectId.from_datetime(dt.datetime(2020, 1, 1)))})
    result = app.test_cli_runner().invoke(args=["gallery", "repair"])
    assert result.exit_code == 0, result.output
    assert "changed: uploads_undone 1, deletes_finished 0, image_numbers_recovered 0, " \
        "leases_released 0, orphan_crops_removed 1" in result.output
    check_invariants(store)


def test_one_repair_at_a_time(store):
    assert store.acquire_lock(repair.REPAIR_LOCK, "another", 60)
    assert repair.run(store, wait_seconds=0)["skipped"]
    store.release_lock(repair.REPAIR_LOCK, "another")
    assert "skipped" not in repair.run(store, wait_seconds=0)
