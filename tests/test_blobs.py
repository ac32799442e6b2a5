"""Originals kept byte for byte, on every blob store; migration between stores; the sweep
of bytes nothing names (issue 15)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import typing as t

import pytest
from PIL import Image

from app import create_app
from errors import ConfigError
from services import blobs
from services import repair
from services import storage
from services.context import check_settings
from services.storage import SimulatedCrash
from services.storage import Store
from services.storage import WriteFault
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import MONGODB_STANDIN
from tests.conftest import assert_error
from tests.conftest import upload
from tests.invariants import check_invariants

Doc = dict[str, t.Any]

#: The stores each database backend offers (GridFS needs MongoDB).
OFFERED = {"mongomock": blobs.STORES, "mongodb": blobs.STORES, "embedded": ("files", "inline")}

FORMATS: dict[str, t.Callable[[], bytes]] = {
    "jpeg_exif": lambda: photos.with_exif(photos.astronaut_rgb(),
                                          taken_at=dt.datetime(2021, 6, 5, 14, 30),
                                          make="Fuji", model="X-T3"),
    "png": lambda: photos.as_png(photos.blank_rgb()),
    "webp": lambda: photos.as_webp(photos.blank_rgb()),
    "gif": lambda: photos.as_gif(photos.blank_rgb()),
}


def offered(store: Store, kind: str) -> None:
    if kind not in OFFERED[store.backend]:
        pytest.skip(f"{kind} is not offered on the {store.backend} store (GridFS needs MongoDB)")


def gallery_app(store: Store, tmp_path, kind: str, **config: t.Any):
    return create_app({**BASE_CONFIG, "BLOB_STORE": kind, "DATA_DIR": str(tmp_path / "files"),
                       **config}, store=store, environ={})


@pytest.fixture(params=blobs.STORES)
def kind(request: pytest.FixtureRequest, store: Store) -> str:
    offered(store, request.param)
    return request.param


@pytest.fixture
def blob_client(store: Store, kind: str, tmp_path):
    with gallery_app(store, tmp_path, kind).test_client() as client:
        yield client
    check_invariants(store)


def stored_keys(store: Store) -> dict[str, set[str]]:
    return {k: {key for key, _ in store.blob_backend(k).keys()} for k in store.blob_kinds()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_original_comes_back_byte_for_byte(blob_client, store, kind, fmt):
    data = FORMATS[fmt]()
    image = upload(blob_client, data, f"photo.{fmt}")
    response = blob_client.get(f"/images/{image['image_id']}/file")
    assert response.status_code == 200
    assert hashlib.sha256(response.data).hexdigest() == hashlib.sha256(data).hexdigest()
    assert response.mimetype == Image.MIME[Image.open(io.BytesIO(data)).format]
    # Cached like the thumbnails: the ETag answers 304.
    again = blob_client.get(f"/images/{image['image_id']}/file",
                            headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    sized = blob_client.get(f"/images/{image['image_id']}/file?size=64")
    assert sized.status_code == 200 and sized.mimetype == "image/jpeg"
    assert max(Image.open(io.BytesIO(sized.data)).size) <= 64
    assert blob_client.get(f"/images/{image['image_id']}").json["data"]["sha256"] == (
        hashlib.sha256(data).hexdigest())
    doc = store.get_image_blob(image["image_id"])
    assert doc["store"] == kind
    if kind == "inline":  # the seed's schema: a data URI in the document
        assert doc["original_image_base64"].startswith("data:image/")


def test_a_large_original_gets_a_display_copy(blob_client, store, kind):
    data = photos.with_exif(photos.scaled(photos.astronaut_full_rgb(), 5), make="Sony")
    assert max(Image.open(io.BytesIO(data)).size) > 1920
    image = upload(blob_client, data, "big.jpg")
    assert (image["width"], image["height"]) == Image.open(io.BytesIO(data)).size
    assert blob_client.get(f"/images/{image['image_id']}/file").data == data
    doc = store.get_image_blob(image["image_id"])
    display = store.read_blob(doc, "display")
    assert max(Image.open(io.BytesIO(display)).size) == 1920
    sized = blob_client.get(f"/images/{image['image_id']}/file?size=800")
    assert sized.status_code == 200
    assert max(Image.open(io.BytesIO(sized.data)).size) == 800
    assert sized.headers["ETag"].strip('"').startswith(hashlib.sha256(display).hexdigest()[:32])
    thumb = blob_client.get(f"/images/{image['image_id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"


def test_deleting_an_image_deletes_its_bytes(blob_client, store, kind):
    image = upload(blob_client, photos.astronaut_jpeg(), "a.jpg")
    assert image["faces_detected"] == 1
    face_id = image["faces"][0]["face_id"]
    assert blob_client.get(f"/faces/{face_id}").mimetype == "image/jpeg"
    crop = blob_client.get(f"/persons/{image['faces'][0]['person_id']}/thumbnail")
    assert crop.status_code == 200 and crop.mimetype == "image/jpeg"
    if kind != "inline":
        assert len(stored_keys(store)[kind]) == 2  # the photo and its crop
    assert blob_client.delete(f"/images/{image['image_id']}").status_code == 200
    assert all(not keys for keys in stored_keys(store).values())
    assert store.count("image_blobs") == store.count("face_crops") == 0


def test_bytes_named_twice_are_stored_once_and_kept_until_both_go(store, tmp_path):
    blobs.attach(store, {"DATA_DIR": str(tmp_path), "DATABASE_NAME": "t", "BLOB_STORE": ""})
    kind = store.blob_kind
    data = photos.hopper_jpeg()
    first = store.save_blob("crop", data, "image/jpeg")
    second = store.save_blob("crop", data, "image/jpeg")
    assert first == second and len(stored_keys(store)[kind]) == 1
    ids = [storage.new_id(), storage.new_id()]
    store.db.face_crops.insert_many([{"_id": i, "image_id": "", **first} for i in ids])
    store.delete_crops([ids[0]])
    assert stored_keys(store)[kind] == {first["sha256"]}
    store.delete_crops([ids[1]])
    assert not stored_keys(store)[kind]


def test_store_originals_off_keeps_the_seeds_compressed_copy(store, tmp_path):
    config = {"STORE_ORIGINALS": False, "IMAGE_MAX_DIMENSION": 256}
    with gallery_app(store, tmp_path, "", **config).test_client() as client:
        data = photos.as_png(photos.astronaut_rgb())
        image = upload(client, data, "a.png")
        kept = client.get(f"/images/{image['image_id']}/file")
        assert kept.mimetype == "image/jpeg" and kept.data != data
        assert max(Image.open(io.BytesIO(kept.data)).size) == 256
    check_invariants(store)


def test_a_photo_over_max_upload_bytes_is_413_and_stores_nothing(store, tmp_path):
    data = photos.astronaut_jpeg()
    with gallery_app(store, tmp_path, "", MAX_UPLOAD_BYTES=len(data) - 1).test_client() as c:
        assert_error(c.post("/images/upload", data={"file": (io.BytesIO(data), "a.jpg")},
                            content_type="multipart/form-data"), 413, "FileSizeError")
        assert store.count("images") == store.count("image_blobs") == 0
        assert all(not keys for keys in stored_keys(store).values())


def test_gridfs_without_mongodb_is_a_config_error():
    with pytest.raises(ConfigError, match="BLOB_STORE"):
        check_settings({"MONGODB_URI": "", "REDIS_URL": "", "DATA_DIR": "/tmp",
                        "BLOB_STORE": "gridfs"})


# -- migration ----------------------------------------------------------------------------

PAIRS = [(a, b) for a in blobs.STORES for b in blobs.STORES if a != b]


def seed_gallery(store: Store, tmp_path, kind: str) -> dict[str, bytes]:
    """Two photos (one with a face, one large enough for a display copy) on ``kind``."""
    with gallery_app(store, tmp_path, kind).test_client() as client:
        originals = {}
        for name, data in (("a.jpg", photos.astronaut_jpeg()),
                           ("big.png", photos.as_png(photos.scaled(photos.blank_rgb(), 8)))):
            originals[upload(client, data, name)["image_id"]] = data
    return originals


def dump(store: Store) -> list[list[str]]:
    return [sorted(map(repr, store.db[c].find({}))) for c in ("image_blobs", "face_crops")]


def read_back(store: Store, tmp_path, kind: str, originals: dict[str, bytes]) -> None:
    with gallery_app(store, tmp_path, kind).test_client() as client:
        for image_id, data in originals.items():
            assert client.get(f"/images/{image_id}/file").data == data
            assert client.get(f"/images/{image_id}/file?size=100").status_code == 200
        for face in store.db.faces.find({}, {"_id": 1}):
            crop = client.get(f"/faces/{face['_id']}")
            assert crop.status_code == 200 and crop.mimetype == "image/jpeg"


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_migration_moves_and_verifies_every_blob(store, tmp_path, source, target):
    offered(store, source)
    offered(store, target)
    originals = seed_gallery(store, tmp_path, source)
    settings = {**BASE_CONFIG, "DATA_DIR": str(tmp_path / "files"),
                "DATABASE_NAME": "face_gallery_test", "BLOB_STORE": target}
    documents = store.count("image_blobs") + store.count("face_crops")
    before = dump(store)
    dry = blobs.migrate(store, target, settings=settings, dry_run=True)
    assert dry["documents"] == documents and dry["failed"] == [] and dry["bytes"] > 0
    assert before == dump(store)
    seen: list[tuple[int, int]] = []
    report = blobs.migrate(store, target, settings=settings,
                           progress=lambda done, total: seen.append((done, total)))
    assert report["moved"] == documents and report["failed"] == []
    assert seen[-1] == (documents, documents)
    for collection in ("image_blobs", "face_crops"):
        assert {d["store"] for d in store.db[collection].find({})} == {target}
    if source != "inline":
        assert not stored_keys(store)[source], "bytes left in the old store"
    read_back(store, tmp_path, target, originals)
    assert blobs.migrate(store, target, settings=settings)["documents"] == 0  # nothing left
    check_invariants(store)


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_an_interrupted_migration_serves_throughout_and_resumes(store, tmp_path, source,
                                                                target, request):
    offered(store, source)
    offered(store, target)
    if MONGODB_STANDIN and store.backend == "mongodb" and "gridfs" in (source, target):
        request.applymarker(pytest.mark.xfail(
            reason="the nx-27017 stand-in keeps GridFS files in tables of its own and returns "
                   "their uploadDate as a string, so the sweep cannot date them; MongoDB "
                   "returns a datetime", strict=False))
    originals = seed_gallery(store, tmp_path, source)
    settings = {**BASE_CONFIG, "DATA_DIR": str(tmp_path / "files"),
                "DATABASE_NAME": "face_gallery_test", "BLOB_STORE": target}
    counting = WriteFault()
    store.arm_fault(counting)
    blobs.migrate(store, target, settings=settings)
    store.disarm_fault()
    writes = counting.writes
    blobs.migrate(store, source, settings=settings)  # back, to kill each write in turn
    for after in range(1, writes + 1):
        store.arm_fault(WriteFault(after))
        with pytest.raises(SimulatedCrash):
            blobs.migrate(store, target, settings=settings)
        store.disarm_fault()
        read_back(store, tmp_path, target, originals)  # usable at every point
        check_invariants(store)
        report = blobs.migrate(store, target, settings=settings)  # run again: it continues
        assert report["failed"] == []
        assert blobs.migrate(store, target, settings=settings)["documents"] == 0
        repair.run(store, blob_grace_seconds=0)
        assert not store.unreferenced_blobs(storage.now() + dt.timedelta(seconds=1))
        read_back(store, tmp_path, target, originals)
        blobs.migrate(store, source, settings=settings)
    check_invariants(store)


def test_documents_from_before_blob_stores_are_read_and_migrated(store, tmp_path):
    offered(store, "files")
    originals = seed_gallery(store, tmp_path, "inline")
    # As an older version wrote them: a data URI and no store or key.
    for collection in ("image_blobs", "face_crops"):
        for doc in store.db[collection].find({}):
            store.db[collection].update_one({"_id": doc["_id"]}, {"$unset": {
                "store": "", "sha256": "", "original_size": "", "crop_size": ""}})
    read_back(store, tmp_path, "files", originals)
    settings = {**BASE_CONFIG, "DATA_DIR": str(tmp_path / "files"),
                "DATABASE_NAME": "face_gallery_test", "BLOB_STORE": "files"}
    report = blobs.migrate(store, "files", settings=settings)
    assert report["failed"] == [] and report["moved"] == 3  # two photos, one crop
    read_back(store, tmp_path, "files", originals)


def test_migrate_command_shows_progress_and_reports(store, tmp_path):
    offered(store, "files")
    seed_gallery(store, tmp_path, "inline")
    app = gallery_app(store, tmp_path, "files")
    result = app.test_cli_runner().invoke(args=["gallery", "blobs", "migrate", "--to", "files"])
    assert result.exit_code == 0, result.output
    assert "progress: 3/3 blob documents" in result.output
    assert '"moved": 3' in result.output


# -- the sweep ------------------------------------------------------------------------------

def test_repair_sweeps_bytes_nothing_names_once_old_enough(store, tmp_path):
    offered(store, "files")
    blobs.attach(store, {"DATA_DIR": str(tmp_path), "DATABASE_NAME": "t",
                         "BLOB_STORE": "files"})
    files = store.blob_backend("files")
    named = store.save_blob("crop", b"named", "image/jpeg")
    store.db.face_crops.insert_many([{"_id": storage.new_id(), "image_id": "", **named}])
    orphan = store.save_blob("crop", b"orphan", "image/jpeg")["sha256"]
    old = (storage.now() - dt.timedelta(hours=2)).timestamp()
    for key in (named["sha256"], orphan):
        os.utime(files.path_for(key), (old, old))
    # A temporary file a killed write left behind.
    half = files.path_for(orphan)[:-10] + "0" * 10 + ".abc.tmp"
    with open(half, "wb") as out:
        out.write(b"half")
    os.utime(half, (old, old))
    fresh = store.save_blob("crop", b"fresh", "image/jpeg")["sha256"]

    report = repair.run(store, dry_run=True)
    assert sorted(report["orphan_blobs_removed"]) == sorted(
        [f"files:{orphan}", f"files:{os.path.basename(half)}"])
    assert len(stored_keys(store)["files"]) == 4
    repair.run(store)
    assert stored_keys(store)["files"] == {named["sha256"], fresh}
    repair.run(store, blob_grace_seconds=0)
    assert stored_keys(store)["files"] == {named["sha256"]}


def test_a_blob_too_large_to_go_inline_is_reported_and_left_where_it_is(store, tmp_path,
                                                                        monkeypatch):
    offered(store, "files")
    originals = seed_gallery(store, tmp_path, "files")
    monkeypatch.setattr(storage, "INLINE_MAX_BYTES", 2048)  # below every blob here
    settings = {**BASE_CONFIG, "DATA_DIR": str(tmp_path / "files"),
                "DATABASE_NAME": "face_gallery_test", "BLOB_STORE": "files"}
    report = blobs.migrate(store, "inline", settings=settings)
    assert len(report["failed"]) == 3 and "document holds" in report["failed"][0]["reason"]
    for collection in ("image_blobs", "face_crops"):
        assert {d["store"] for d in store.db[collection].find({})} == {"files"}
    read_back(store, tmp_path, "files", originals)
