"""Batch ingest: photos analysed in a process pool, written in order, memory bounded."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from app import create_app
from errors import FileValidationError
from services import ingest
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import make_store
from tests.conftest import upload
from tests.invariants import check_invariants

OPTIONS = ingest.AnalysisOptions.from_settings({
    "ALLOWED_EXTENSIONS": ["jpg", "jpeg", "png", "gif", "webp"], "IMAGE_MAX_PIXELS": 10**8,
    "IMAGE_MAX_DIMENSION": 1920, "STORE_ORIGINALS": False, "IMAGE_QUALITY": 85,
    "FACE_CROP_PADDING": 0.1, "FACE_DETECTION_MODEL": "hog", "FACE_DETECTION_UPSAMPLE": 1,
    "FACE_NUM_JITTERS": 1, "FACE_DETECTION_MAX_DIMENSION": 0,
})


def batch(client, *files: tuple[bytes, str]):
    return client.post("/images/upload-multiple", data={
        "files": [(io.BytesIO(data), name) for data, name in files]},
        content_type="multipart/form-data")


def test_errors_keep_their_details_across_processes():
    error = pickle.loads(pickle.dumps(FileValidationError("bad", details={"field": "file"})))
    assert type(error) is FileValidationError
    assert (error.message, error.details) == ("bad", {"field": "file"})


def test_the_pool_gives_what_one_process_gives_in_the_same_order():
    inputs = [("group", photos.group_photo()), ("bad", b"not an image"),
              ("hopper", photos.hopper_jpeg())]
    alone = ingest.analyse_photo(photos.group_photo(), OPTIONS)
    pool = ingest.IngestPool(2)
    try:
        outcomes = list(pool.analyse([(name, lambda d=data: d) for name, data in inputs],
                                     OPTIONS))
    finally:
        pool.close()
    assert [name for name, _, _ in outcomes] == ["group", "bad", "hopper"]
    group, bad, hopper = (outcome for _, outcome, _ in outcomes)
    assert isinstance(bad, FileValidationError)
    assert [f.box for f in group.faces] == [f.box for f in alone.faces]
    np.testing.assert_allclose([f.encoding for f in group.faces],
                               [f.encoding for f in alone.faces], atol=1e-6)
    assert len(hopper.faces) == 1 and hopper.faces[0].crop_jpeg[:2] == b"\xff\xd8"


@pytest.mark.parametrize("workers", [1, 3])
def test_photos_are_loaded_only_a_few_ahead_of_the_one_written(workers):
    loaded: list[int] = []

    def loader(number: int):
        def load() -> bytes:
            loaded.append(number)
            return b"%d" % number
        return load

    pool = ingest.IngestPool(workers)
    # precheck answers every photo, so nothing is analysed: only the reading order counts.
    outcomes = pool.analyse(((str(n), loader(n)) for n in range(40)), OPTIONS,
                            precheck=lambda data: data.decode())
    for position, (name, outcome, _) in enumerate(outcomes):
        assert outcome == name == str(position)
        assert len(loaded) <= position + 1 + ingest.IN_FLIGHT_PER_WORKER * workers
    assert loaded == list(range(40))


def test_a_batch_counts_new_uploads_duplicates_and_failures_apart(client):
    upload(client, photos.hopper_jpeg(), "first.jpg")
    response = batch(client, (photos.astronaut_jpeg(), "a.jpg"), (b"junk", "junk.jpg"),
                     (photos.hopper_jpeg(), "again.jpg"), (photos.astronaut_jpeg(), "a2.jpg"))
    assert response.status_code == 207, response.json
    data = response.json["data"]
    assert (data["total_images"], data["successful_uploads"], data["duplicates"],
            data["failed_uploads"]) == (4, 1, 2, 1)
    assert [r["success"] for r in data["results"]] == [True, False, True, True]
    assert [r.get("duplicate") for r in data["results"]] == [False, None, True, True]
    assert data["results"][3]["image_id"] == data["results"][0]["image_id"]
    assert data["total_faces_detected"] == 1
    again = batch(client, (photos.astronaut_jpeg(), "a.jpg"))
    assert again.status_code == 200 and again.json["data"]["duplicates"] == 1


def test_a_batch_through_two_worker_processes(tmp_path):
    # The pool is the same whatever the backend: one is enough for this slow test.
    store = make_store("mongomock", tmp_path)
    app = create_app({**BASE_CONFIG, "INGEST_WORKERS": 2}, store=store, environ={})
    try:
        with app.test_client() as client:
            response = batch(client, (photos.astronaut_jpeg(), "a.jpg"),
                             (photos.group_photo(), "g.jpg"), (photos.hopper_jpeg(), "h.jpg"))
            assert response.status_code == 200, response.json
            data = response.json["data"]
            assert data["successful_uploads"] == 3 and data["total_faces_detected"] == 4
            # Written in order: the group photo's faces join the persons its neighbours made.
            assert data["persons_created"] == 2
            listed = client.get("/images/?limit=10").json["data"]["images"]
            assert [i["filename"] for i in listed] == ["h.jpg", "g.jpg", "a.jpg"]
        check_invariants(store)
    finally:
        app.extensions["face_gallery"].close()
