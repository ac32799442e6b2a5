"""Background jobs: async uploads and re-clustering, progress, cancelling, crashes, workers.

The job logic runs on every store backend with huey's immediate mode (a job runs inside the
request that queues it) or with a queue no worker reads (the job waits, and the test runs it
with :func:`jobs.run_job`). Real workers run as subprocesses on the embedded store, with the
SQLite queue and, when ``TEST_REDIS_URL`` is set, with Redis.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import timedelta

import pytest

from app import create_app
from errors import ConfigError
from services import jobs
from services import storage
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import MISSING
from tests.conftest import ROOT
from tests.conftest import assert_error
from tests.conftest import upload
from tests.invariants import check_invariants

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
#: How long a test waits for a worker process to finish a job.
WORKER_WAIT_SECONDS = 90.0


class Crash(BaseException):
    """Stands for a killed worker: nothing below run_job catches it, as nothing survives a
    SIGKILL."""


@pytest.fixture
def jobs_app(store, tmp_path):
    """An app whose queue is a SQLite file no worker reads: jobs wait until a test runs them."""
    app = create_app({**BASE_CONFIG, "DATA_DIR": str(tmp_path / "data")}, store=store,
                     environ={})
    yield app
    app.extensions["face_gallery"].close()


@pytest.fixture
def client(jobs_app, store):
    with jobs_app.test_client() as test_client:
        yield test_client
    check_invariants(store)


def gallery_of(app):
    return app.extensions["face_gallery"]


def run_at_once(app) -> None:
    """Jobs run inside the request that queues them (huey's immediate mode)."""
    gallery_of(app).queue.immediate = True


def submit(client, *files: tuple[bytes, str], expect: int = 202, **form):
    response = client.post("/images/upload-multiple?async=true", data={
        "files": [(io.BytesIO(data), name) for data, name in files], **form},
        content_type="multipart/form-data")
    assert response.status_code == expect, response.json
    return response


def job_of(client, job_id: str) -> dict:
    response = client.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.json
    return response.json["data"]


def dead_claimant() -> str:
    """``host:pid`` of a process of this machine that has ended."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    return f"{socket.gethostname()}:{ended.pid}"


def crash_at(position: int):
    """A hook that kills the run when file ``position`` is written, before it is recorded."""
    def hook(at: int, result: dict) -> None:
        if at == position:
            raise Crash(at)
    return hook


def crash_at_second_file():
    """A hook that lets a run record one file and kills it when the next one is written."""
    seen: list[int] = []

    def hook(at: int, result: dict) -> None:
        seen.append(at)
        if len(seen) == 2:
            raise Crash(at)
    return hook


def count_images(client) -> int:
    return client.get("/images/?limit=1").json["data"]["total"]


# -- the job logic, on every backend ------------------------------------------------------

def test_async_upload_is_a_job_with_each_files_result(jobs_app, client, store):
    run_at_once(jobs_app)
    upload(client, photos.hopper_jpeg(), "first.jpg")
    response = submit(client, (photos.astronaut_jpeg(), "a.jpg"), (b"junk", "junk.jpg"),
                      (photos.hopper_jpeg(), "again.jpg"))
    accepted = response.json["data"]
    assert response.headers["Location"] == accepted["status_url"] == \
        f"/jobs/{accepted['job_id']}"
    job = job_of(client, accepted["job_id"])
    assert (job["kind"], job["status"], job["percent"], job["eta_seconds"]) == \
        ("upload", "done", 100.0, 0.0)
    assert (job["total"], job["processed"], job["succeeded"], job["duplicates"],
            job["failed"], job["faces_detected"]) == (3, 3, 1, 1, 1, 1)
    assert job["files_not_done"] == [] and job["attempts"] == 1
    assert job["started_at"] and job["finished_at"] and job["claimant"]
    # The same per-file results as the synchronous batch.
    assert [r["success"] for r in job["results"]] == [True, False, True]
    assert [r.get("duplicate") for r in job["results"]] == [False, None, True]
    assert job["results"][1]["error_type"] == "FileValidationError"
    assert job["results"][0]["faces"][0]["person_id"]
    assert count_images(client) == 2
    assert store.count("job_files") == 0  # bytes are dropped once their result is recorded


def test_async_upload_files_the_images(jobs_app, client):
    run_at_once(jobs_app)
    album = client.post("/albums/", json={"name": "Trip"}).json["data"]["_id"]
    job = submit(client, (photos.astronaut_jpeg(), "a.jpg"), album_id=album).json["data"]
    assert job["params"] == {"album_id": album, "section_id": None}
    image_id = job_of(client, job["job_id"])["results"][0]["image_id"]
    assert client.get(f"/images/{image_id}").json["data"]["album_id"] == album


def test_async_upload_cleans_the_file_names_it_keeps(jobs_app, client, store):
    """A job keeps its files' names until it runs: without their control characters."""
    run_at_once(jobs_app)
    job = submit(client, (photos.blank_jpeg(), "sky\x1b[0m.jpg"),
                 (b"junk", "junk\x00\u202e.jpg")).json["data"]
    assert store.find_job(job["job_id"])["files"] == ["sky[0m.jpg", "junk.jpg"]
    results = job_of(client, job["job_id"])["results"]
    assert [r["filename"] for r in results] == ["sky[0m.jpg", "junk.jpg"]


def test_filing_is_checked_before_anything_is_stored(client, store):
    assert_error(submit(client, (photos.astronaut_jpeg(), "a.jpg"), expect=404,
                        album_id=MISSING), 404, "DocumentNotFoundError")
    assert_error(submit(client, (photos.astronaut_jpeg(), "a.jpg"), expect=400,
                        section_id="nope"), 400, "ValidationError")
    assert store.count("jobs") == 0 and store.count("job_files") == 0


def test_job_ids_are_checked(client):
    for method in (client.get, client.delete):
        assert_error(method(f"/jobs/{MISSING}"), 404, "DocumentNotFoundError")
        assert_error(method("/jobs/not-an-id"), 400, "ValidationError")


def test_jobs_are_listed_newest_first_and_filtered_by_status(jobs_app, client):
    waiting = submit(client, (photos.astronaut_jpeg(), "a.jpg")).json["data"]["job_id"]
    assert job_of(client, waiting)["status"] == "queued"
    run_at_once(jobs_app)
    done = [client.post("/cluster/?async=true").json["data"]["job_id"] for _ in range(2)]
    listed = client.get("/jobs/?status=done").json["data"]
    assert [j["job_id"] for j in listed["jobs"]] == done[::-1] and listed["total"] == 2
    assert "results" not in listed["jobs"][0]
    everything = client.get("/jobs/?limit=2&offset=1").json["data"]
    assert everything["total"] == 3
    assert [j["job_id"] for j in everything["jobs"]] == [done[0], waiting]
    assert [j["job_id"] for j in client.get("/jobs/?status=queued").json["data"]["jobs"]] \
        == [waiting]
    assert_error(client.get("/jobs/?status=finished"), 400, "ValidationError")
    assert_error(client.get("/jobs/?limit=0"), 400, "ValidationError")


def test_a_queued_job_is_cancelled_at_once(jobs_app, client, store):
    job_id = submit(client, (photos.astronaut_jpeg(), "a.jpg"),
                    (photos.hopper_jpeg(), "h.jpg")).json["data"]["job_id"]
    response = client.delete(f"/jobs/{job_id}")
    assert response.status_code == 200 and response.json["message"] == "Job cancelled"
    job = response.json["data"]
    assert (job["status"], job["processed"], job["files_not_done"]) == \
        ("cancelled", 0, ["a.jpg", "h.jpg"])
    assert store.count("job_files") == 0
    assert_error(client.delete(f"/jobs/{job_id}"), 409, "ConflictError")
    # The queue still holds its message: a worker taking it does nothing.
    assert jobs.run_job(gallery_of(jobs_app), job_id) is None
    assert count_images(client) == 0


def test_a_running_upload_stops_between_files_when_cancelled(jobs_app, client, store):
    job_id = submit(client, (photos.astronaut_jpeg(), "a.jpg"), (photos.hopper_jpeg(), "h.jpg"),
                    (photos.group_photo(), "g.jpg")).json["data"]["job_id"]
    answers = []

    def cancel_during_first_file(position: int, result: dict) -> None:
        if position == 0:
            answers.append(client.delete(f"/jobs/{job_id}"))

    ending = jobs.run_job(gallery_of(jobs_app), job_id, before_record=cancel_during_first_file)
    assert ending == "cancelled"
    assert answers[0].status_code == 200
    assert answers[0].json["message"] == "Cancellation requested"
    assert answers[0].json["data"]["status"] == "running"
    assert answers[0].json["data"]["cancel_requested"] is True
    job = job_of(client, job_id)
    assert (job["status"], job["processed"], job["succeeded"]) == ("cancelled", 1, 1)
    assert job["files_not_done"] == ["h.jpg", "g.jpg"] and len(job["results"]) == 1
    assert job["percent"] == pytest.approx(33.3)
    assert store.count("job_files") == 0 and count_images(client) == 1
    assert_error(client.delete(f"/jobs/{job_id}"), 409, "ConflictError")


def test_a_stopping_worker_puts_its_job_back_in_the_queue(jobs_app, client, store):
    gallery = gallery_of(jobs_app)
    job_id = submit(client, (photos.astronaut_jpeg(), "a.jpg"), (photos.hopper_jpeg(), "h.jpg"),
                    (photos.group_photo(), "g.jpg")).json["data"]["job_id"]
    assert jobs.run_job(gallery, job_id, should_stop=lambda: True) == "queued"
    job = job_of(client, job_id)
    assert (job["status"], job["processed"], job["attempts"], job["claimant"]) == \
        ("queued", 1, 0, "")
    assert job_id in gallery.queue.pending_job_ids()
    seen = []

    def look_at_the_last_file(position: int, result: dict) -> None:
        if position == 2:
            seen.append(job_of(client, job_id))

    started = time.monotonic()
    assert jobs.run_job(gallery, job_id, before_record=look_at_the_last_file) == "done"
    took = time.monotonic() - started
    running = seen[0]
    assert (running["status"], running["processed"], running["percent"]) == \
        ("running", 2, 66.7)
    # One file done in this run so far, one left: about as long again as it has taken, so
    # at most this whole run, in tenths of a second (0.0 when files take under 50 ms, as
    # with the stand-in run's memo of dlib's results, tests/conftest.py).
    assert 0 <= running["eta_seconds"] <= took + 0.1 and running["heartbeat_at"]
    job = job_of(client, job_id)
    assert (job["processed"], job["succeeded"], job["attempts"]) == (3, 3, 1)
    assert [r["filename"] for r in job["results"]] == ["a.jpg", "h.jpg", "g.jpg"]


def test_recluster_job(jobs_app, client):
    run_at_once(jobs_app)
    upload(client, photos.astronaut_jpeg())
    upload(client, photos.hopper_jpeg())
    response = client.post("/cluster/?async=true", json={"tolerance": 0.5})
    assert response.status_code == 202, response.json
    job = job_of(client, response.json["data"]["job_id"])
    assert (job["kind"], job["status"], job["percent"], job["processed"]) == \
        ("recluster", "done", 100.0, 1)
    assert job["params"] == {"tolerance": 0.5, "min_samples": 1, "preserve_manual": True,
                             "by": "anonymous"}  # who asked: the run records it
    assert job["result"]["faces_processed"] == 2 and job["result"]["tolerance"] == 0.5
    assert_error(client.delete(f"/jobs/{job['job_id']}"), 409, "ConflictError")
    assert_error(client.get("/cluster/?async=true"), 400, "ValidationError")
    assert_error(client.post("/cluster/?async=maybe"), 400, "ValidationError")


# -- crashes -----------------------------------------------------------------------------

@pytest.mark.parametrize("gone", ["dead-pid", "stale-heartbeat"])
def test_a_job_whose_worker_died_resumes_without_losing_or_repeating_files(
        jobs_app, client, store, gone):
    gallery = gallery_of(jobs_app)
    job_id = submit(client, (photos.astronaut_jpeg(), "a.jpg"), (photos.hopper_jpeg(), "h.jpg"),
                    (b"junk", "junk.jpg")).json["data"]["job_id"]
    with pytest.raises(Crash):  # the second photo is written, not recorded
        jobs.run_job(gallery, job_id, before_record=crash_at(1))
    if gone == "dead-pid":
        store.update_job(job_id, {"claimant": dead_claimant()})
    else:  # another machine's worker, silent for longer than a heartbeat may be late
        old = storage.now() - timedelta(seconds=jobs.STALE_HEARTBEAT_SECONDS + 1)
        store.update_job(job_id, {"claimant": "elsewhere:1", "heartbeat_at": old})
    assert job_of(client, job_id)["status"] == "running"

    run_at_once(jobs_app)  # the job recover puts back in the queue runs at once
    report = jobs.recover(gallery)
    assert report["resumed"] == [job_id]
    job = job_of(client, job_id)
    assert (job["status"], job["attempts"], job["processed"]) == ("done", 2, 3)
    assert [r["filename"] for r in job["results"]] == ["a.jpg", "h.jpg", "junk.jpg"]
    assert [r.get("duplicate") for r in job["results"]] == [False, True, None]
    assert (job["succeeded"], job["duplicates"], job["failed"]) == (1, 1, 1)
    assert count_images(client) == 2
    assert store.count("job_files") == 0
    assert jobs.recover(gallery) == {"resumed": [], "failed": [], "requeued": [],
                                     "abandoned": []}


def test_a_live_worker_keeps_its_job(jobs_app, client, store):
    gallery = gallery_of(jobs_app)
    job_id = submit(client, (photos.astronaut_jpeg(), "a.jpg"),
                    (photos.hopper_jpeg(), "h.jpg")).json["data"]["job_id"]
    with pytest.raises(Crash):
        jobs.run_job(gallery, job_id, before_record=crash_at(1))
    # Its claimant is this (live) process and its heartbeat is fresh: nothing to recover.
    assert jobs.recover(gallery)["resumed"] == []
    assert job_of(client, job_id)["status"] == "running"
    # Another message for the job finds it taken.
    assert jobs.run_job(gallery, job_id) is None
    store.update_job(job_id, {"claimant": dead_claimant()})
    repaired = jobs_app.test_cli_runner().invoke(args=["gallery", "repair"])
    assert repaired.exit_code == 0, repaired.output
    assert f'"resumed": [\n      "{job_id}"' in repaired.output
    assert jobs.run_job(gallery, job_id) == "done"


def test_a_job_whose_worker_keeps_dying_fails_naming_the_files_not_done(jobs_app, client,
                                                                          store):
    gallery = gallery_of(jobs_app)
    names = ["a.jpg", "h.jpg", "junk.jpg", "last.jpg"]
    job_id = submit(client, (photos.astronaut_jpeg(), names[0]), (photos.hopper_jpeg(), names[1]),
                    (b"junk", names[2]), (b"more junk", names[3])).json["data"]["job_id"]
    for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
        with pytest.raises(Crash):
            jobs.run_job(gallery, job_id, before_record=crash_at_second_file())
        store.update_job(job_id, {"claimant": dead_claimant()})
        report = jobs.recover(gallery)
        assert (report["resumed"] if attempt < jobs.MAX_ATTEMPTS else report["failed"]) == \
            [job_id]
    job = job_of(client, job_id)
    assert (job["status"], job["processed"], job["attempts"]) == ("failed", 3, 3)
    assert job["files_not_done"] == ["last.jpg"] and "3 runs" in job["error"]
    assert store.count("job_files") == 0
    assert count_images(client) == 2


def test_a_queued_job_whose_message_was_lost_is_queued_again(jobs_app, client, store):
    gallery = gallery_of(jobs_app)
    job_id = submit(client, (photos.astronaut_jpeg(), "a.jpg")).json["data"]["job_id"]
    gallery.queue.huey.flush()  # e.g. Redis restarted without persistence
    assert jobs.recover(gallery)["requeued"] == []  # just queued: its message may be coming
    old = storage.now() - timedelta(seconds=jobs.REQUEUE_AFTER_SECONDS + 1)
    store.update_job(job_id, {"queued_at": old})
    assert jobs.recover(gallery)["requeued"] == [job_id]
    assert gallery.queue.pending_job_ids() == {job_id}
    assert jobs.recover(gallery)["requeued"] == []  # waiting in the queue: left alone


def test_files_that_never_finished_arriving_are_dropped(jobs_app, client, store):
    gallery = gallery_of(jobs_app)

    def disconnected() -> bytes:
        raise OSError("the client went away while its upload was read")

    with pytest.raises(OSError):
        jobs.submit_upload(gallery, [("a.jpg", photos.astronaut_jpeg), ("b.jpg", disconnected)])
    [job] = client.get("/jobs/").json["data"]["jobs"]
    assert (job["status"], job["error"]) == ("failed", "storing the files failed")
    assert store.count("job_files") == 0
    # A request that died while storing leaves its job receiving: recover ends it later.
    job_id = submit(client, (photos.astronaut_jpeg(), "a.jpg")).json["data"]["job_id"]
    old = storage.now() - timedelta(seconds=jobs.RECEIVING_STALE_SECONDS + 1)
    store.update_job(job_id, {"status": "receiving", "created_at": old})
    assert_error(client.delete(f"/jobs/{job_id}"), 409, "ConflictError")
    assert jobs.recover(gallery)["abandoned"] == [job_id]
    job = job_of(client, job_id)
    assert (job["status"], job["files_not_done"]) == ("failed", ["a.jpg"])
    assert store.count("job_files") == 0


def test_job_files_larger_than_a_document_are_stored_in_parts(store):
    data = os.urandom(storage.JOB_FILE_PART_BYTES + 1000)
    store.put_job_file(MISSING, 0, data)
    store.put_job_file(MISSING, 1, b"small")
    assert store.count("job_files") == 3
    assert store.read_job_file(MISSING, 0) == data
    assert store.read_job_file(MISSING, 1) == b"small"
    store.delete_job_file(MISSING, 0)
    assert store.read_job_file(MISSING, 0) is None and store.count("job_files") == 1
    assert store.delete_job_files(MISSING) == 1


# -- configuration -----------------------------------------------------------------------

@pytest.mark.parametrize("name, value", [("REDIS_URL", "localhost:6379"),
                                         ("JOBS_WORKER", "threads")])
def test_bad_jobs_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        create_app(environ={"FLASK_ENV": "testing", name: value})


# -- real workers ------------------------------------------------------------------------

def worker_environment(data_dir, **settings: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FLASK_ENV": "development",
            "MONGODB_URI": "", "DATA_DIR": str(data_dir), "INGEST_WORKERS": "1",
            "LOG_LEVEL": "WARNING", "OPENBLAS_NUM_THREADS": "1", **settings}


def wait_for_job(get_job, job_id: str) -> dict:
    deadline = time.monotonic() + WORKER_WAIT_SECONDS
    while True:
        job = get_job(job_id)
        if job["status"] in jobs.FINISHED or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    process.send_signal(sig)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("queue", [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.skipif(
        not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set: no Redis server to test on")),
])
def test_a_worker_process_runs_the_jobs_the_api_queues(tmp_path, queue):
    settings = {"DATABASE_NAME": f"jobs_{uuid.uuid4().hex[:12]}"}
    if queue == "redis":
        settings["REDIS_URL"] = TEST_REDIS_URL
    env = worker_environment(tmp_path / "data", **settings)
    app = create_app({**BASE_CONFIG, **settings, "MONGODB_URI": "",
                      "DATA_DIR": env["DATA_DIR"]}, environ={})
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "gallery",
                                   "worker"], cwd=ROOT, env=env, stderr=stderr)
    try:
        with app.test_client() as client:
            job_id = submit(client, (photos.astronaut_jpeg(), "a.jpg"),
                            (photos.hopper_jpeg(), "h.jpg")).json["data"]["job_id"]
            job = wait_for_job(lambda i: job_of(client, i), job_id)
            assert job["status"] == "done", job
            assert (job["succeeded"], job["faces_detected"]) == (2, 2)
            assert job["claimant"].endswith(f":{worker.pid}")
            assert count_images(client) == 2
        check_invariants(gallery_of(app).store)
    finally:
        stop(worker)
        if queue == "redis":
            gallery_of(app).queue.huey.storage.flush_all()
        gallery_of(app).close()
    assert worker.returncode == 0, log.read_text()


@pytest.mark.slow
def test_python_app_py_serves_and_runs_jobs_then_stops_its_worker(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = worker_environment(tmp_path / "data", HOST="127.0.0.1", PORT=str(port))
    log = tmp_path / "server.log"
    with log.open("w") as stderr:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "no server"
                time.sleep(0.3)
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                f"filename=\"h.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + \
            photos.hopper_jpeg() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            f"{base}/images/upload-multiple?async=true", data=body, method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
            location = response.headers["Location"]

        def get_job(_: str) -> dict:
            import json

            with urllib.request.urlopen(base + location, timeout=10) as answer:
                return json.load(answer)["data"]

        job = wait_for_job(get_job, location)
        assert job["status"] == "done" and job["faces_detected"] == 1, job
        worker_pid = int(job["claimant"].rpartition(":")[2])
        assert worker_pid != server.pid
    finally:
        stop(server, signal.SIGINT)  # Ctrl-C
    assert server.returncode == 0, log.read_text()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the jobs worker outlived the server")
