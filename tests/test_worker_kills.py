"""Real gunicorn with two workers, one SIGKILLed during uploads and moves (issue 13).

The gallery is checked right after the load, with no waiting beyond one background repair
interval: what a killed worker left must already be repaired by the live server (the new
worker's ``post_worker_init`` repair, and every worker's upkeep thread), not by a repair the
test runs. The embedded store on a temporary ``DATA_DIR`` is then opened in this process and
only the invariant checker is run on it.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

import pytest

from services import repair
from services.storage import open_store
from tests import photos
from tests.conftest import ROOT
from tests.invariants import check_invariants

psutil = pytest.importorskip("psutil")
requests = pytest.importorskip("requests")

GUNICORN = Path(sys.executable).parent / "gunicorn"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gunicorn") is None or not GUNICORN.exists(),
                       reason="gunicorn is not installed: no real server to kill workers of"),
]

Doc = dict[str, t.Any]

WORKERS = 2
REPAIR_INTERVAL = 1.0
UPLOADERS = 3
PHOTOS_EACH = 5
#: What repair does to work a dead process left; all of it must be done by the live server.
ABANDONED = ("uploads_undone", "deletes_finished", "leases_released", "intents_finished")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _distinct_photos(count: int) -> list[bytes]:
    """Small photos of one face each, no two alike: both people, scaled and mirrored."""
    made = []
    for i in range(count):
        step = i // 2
        if i % 2 == 0:  # never at scale 1: that is astronaut_jpeg(), a seed photo
            photo = photos.scaled(photos.astronaut_rgb(), 0.97 - 0.03 * step)
        else:
            photo = photos.scaled(photos.hopper_rgb(), 0.6 - 0.02 * step)
        made.append(photos.mirrored(photo) if step % 2 else photo)
    assert len(set(made)) == count
    assert not set(made) & {photos.astronaut_jpeg(), photos.hopper_jpeg()}
    return made


class Server:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` serving this checkout on a free port."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.log = tmp_path / "gunicorn.log"
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "FLASK_ENV": "development",
               "HOST": "127.0.0.1", "PORT": str(self.port), "DATA_DIR": str(self.data_dir),
               "WEB_CONCURRENCY": str(WORKERS), "JOBS_WORKER": "external",
               "RATELIMIT_ENABLED": "false", "REPAIR_INTERVAL_SECONDS": str(REPAIR_INTERVAL),
               "INGEST_WORKERS": "1", "LOG_LEVEL": "info"}
        with self.log.open("w") as out:
            # ROOT as cwd and first on the path: this checkout is served, not the editable
            # install's.
            self.process = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"],
                                            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                            env=env)
        self.master = psutil.Process(self.process.pid)

    def workers(self) -> list[int]:
        """The live web workers' pids (JOBS_WORKER=external: the master has no other child)."""
        return [child.pid for child in self.master.children()
                if child.status() != psutil.STATUS_ZOMBIE]

    def wait_until_serving(self, seconds: float = 60.0) -> None:
        """Until /health answers 200 and every worker has been started again."""
        deadline = time.monotonic() + seconds
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                healthy = requests.get(self.url + "/health", timeout=5).status_code == 200
            except requests.RequestException:
                healthy = False
            if healthy and len(self.workers()) == WORKERS:
                return
            assert time.monotonic() < deadline, "gunicorn never served:\n" + self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


def _upload(session: t.Any, url: str, data: bytes, name: str) -> t.Any:
    return session.post(url + "/images/upload", files={"file": (name, data, "image/jpeg")},
                        timeout=120)


class Load:
    """Uploaders and a mover over HTTP, recording what the server acknowledged (2xx)."""

    def __init__(self, url: str, seed_faces: list[str], photo_sets: list[list[bytes]]) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.faces = list(seed_faces)
        self.acked: dict[str, bytes] = {}  # image id -> the photo
        self.failed: list[str] = []  # what came back without a 2xx answer, and why
        self.moves: list[int] = []  # status of each move answered
        self.uploads_done = threading.Event()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._uploader, args=(n, share), daemon=True)
                        for n, share in enumerate(photo_sets)]
        self.threads.append(threading.Thread(target=self._mover, daemon=True))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def finish(self) -> None:
        for thread in self.threads[:-1]:
            thread.join(timeout=300)
        self.uploads_done.set()
        self.stopping.set()
        self.threads[-1].join(timeout=120)
        assert not any(thread.is_alive() for thread in self.threads)

    def _uploader(self, number: int, share: list[bytes]) -> None:
        session = requests.Session()
        for i, data in enumerate(share):
            try:
                answer = _upload(session, self.url, data, f"u{number}-{i}.jpg")
            except requests.RequestException as err:
                with self.lock:
                    self.failed.append(f"upload {number}-{i}: {type(err).__name__}")
                session = requests.Session()  # its connection may be the killed worker's
                continue
            with self.lock:
                if answer.ok:
                    body = answer.json()["data"]
                    self.acked[body["image_id"]] = data
                    self.faces.extend(face["face_id"] for face in body["faces"])
                else:
                    self.failed.append(f"upload {number}-{i}: {answer.status_code}")

    def _mover(self) -> None:
        session = requests.Session()
        chance = random.Random(13)
        while not self.stopping.is_set():
            try:
                listed = session.get(self.url + "/persons/?limit=500", timeout=60)
                persons = [p["_id"] for p in listed.json()["data"]["persons"]]
                for _ in range(3):
                    with self.lock:
                        face_id = chance.choice(self.faces)
                    if chance.random() < 0.3 or not persons:
                        answer = session.put(f"{self.url}/faces/{face_id}/move-to-new",
                                             json={}, timeout=60)
                    else:
                        answer = session.put(f"{self.url}/faces/{face_id}/move",
                                             json={"target_person_id": chance.choice(persons)},
                                             timeout=60)
                    with self.lock:
                        self.moves.append(answer.status_code)
            except (requests.RequestException, ValueError, KeyError) as err:
                with self.lock:
                    self.failed.append(f"move: {type(err).__name__}")
                session = requests.Session()


def _get_all(url: str, path: str, key: str) -> tuple[list[Doc], int]:
    found: list[Doc] = []
    for offset in itertools.count(0, 500):
        page = requests.get(f"{url}{path}?limit=500&offset={offset}", timeout=60).json()["data"]
        found.extend(page[key])
        if offset + 500 >= page["total"]:
            return found, page["total"]
    raise AssertionError("unreachable")


def _kill_a_worker(server: Server, victims: list[int]) -> None:
    """SIGKILL the busier web worker (the one with more CPU time used: likely mid-request)."""
    pids = server.workers()
    busy = max(pids, key=lambda pid: sum(psutil.Process(pid).cpu_times()[:2]))
    os.kill(busy, signal.SIGKILL)
    victims.append(busy)


def test_killed_workers_leave_a_consistent_gallery_with_no_waiting(tmp_path):
    started = time.monotonic()
    server = Server(tmp_path)
    try:
        server.wait_until_serving()
        # This checkout is what serves: the workers run in it, with it first on their path
        # (their environ is not readable: gunicorn's process titles overwrite it).
        assert all(psutil.Process(pid).cwd() == str(ROOT) for pid in server.workers())
        booted = time.monotonic()
        session = requests.Session()
        seed_faces = []
        for name, data in [("astronaut.jpg", photos.astronaut_jpeg()),
                           ("hopper.jpg", photos.hopper_jpeg()),
                           ("group.jpg", photos.group_photo())]:
            answer = _upload(session, server.url, data, name)
            assert answer.status_code == 201, answer.text
            seed_faces.extend(face["face_id"] for face in answer.json()["data"]["faces"])
        assert len(seed_faces) == 4
        seeded = time.monotonic()

        made = _distinct_photos(UPLOADERS * PHOTOS_EACH)
        load = Load(server.url, seed_faces,
                    [made[n::UPLOADERS] for n in range(UPLOADERS)])
        load.start()
        victims: list[int] = []
        kill_times: list[float] = []
        # Kill 1 once the first upload of the load is acknowledged (others are mid-way), the
        # next ones once the replacement serves and more uploads are acknowledged.
        for wait_for in (1, 4, 8):
            deadline = time.monotonic() + 120
            while (load.acked_count() < wait_for and time.monotonic() < deadline
                   and any(thread.is_alive() for thread in load.threads[:-1])):
                time.sleep(0.05)
            _kill_a_worker(server, victims)
            kill_times.append(time.monotonic() - seeded)
            server.wait_until_serving()
        load.finish()
        loaded = time.monotonic()

        # Right after: the server serves again; two background repair intervals (2 s), no more.
        server.wait_until_serving()
        time.sleep(2 * REPAIR_INTERVAL)
        stats = requests.get(server.url + "/stats/", timeout=60).json()["data"]
        images, total_images = _get_all(server.url, "/images/", "images")
        persons, total_persons = _get_all(server.url, "/persons/", "persons")
        for image_id in load.acked:
            answer = requests.get(f"{server.url}/images/{image_id}", timeout=60)
            assert answer.status_code == 200, f"acknowledged upload {image_id}: {answer.text}"
        # Ghosts: no match may name an image or a face that is not there.
        ghosts = []
        queries = [photos.astronaut_jpeg(), photos.hopper_jpeg(), *list(load.acked.values())[:4]]
        for data in queries:
            answer = requests.post(server.url + "/images/search-by-image",
                                   files={"file": ("q.jpg", data, "image/jpeg")},
                                   data={"limit": "50"}, timeout=120)
            assert answer.status_code == 200, answer.text
            for match in answer.json()["data"]["matches"]:
                if requests.get(f"{server.url}/images/{match['image_id']}",
                                timeout=60).status_code == 404:
                    ghosts.append(("image", match["image_id"]))
                if requests.get(f"{server.url}/faces/{match['face_id']}/info",
                                timeout=60).status_code == 404:
                    ghosts.append(("face", match["face_id"]))
        # A killed upload holds nothing back: its photo uploads again (200 if it was stored
        # before its answer was lost), never 409 "still being stored".
        again = set()
        for data in set(made) - set(load.acked.values()):
            answer = _upload(session, server.url, data, "again.jpg")
            assert answer.status_code in (200, 201), answer.text
            again.add(answer.json()["data"]["image_id"])
        checked_live = time.monotonic()
    finally:
        server.stop()
    log = server.log.read_text()
    print(f"\nboot {booted - started:.1f}s, seed {seeded - booted:.1f}s, "
          f"load {loaded - seeded:.1f}s (kills at {', '.join(f'{s:.1f}' for s in kill_times)}s),"
          f" live checks {checked_live - loaded:.1f}s; {len(load.acked)} of {len(made)} uploads"
          f" acknowledged, {len(load.moves)} moves answered "
          f"({sorted(set(load.moves))}), not answered: {load.failed}")
    print("repairs logged by the server:",
          [line for line in log.splitlines() if "repaired" in line])

    assert len(victims) == len(set(victims)) == 3
    for pid in victims:  # gunicorn saw each kill, and started a worker in its place
        assert f"Worker (pid:{pid}) was sent SIGKILL" in log, log[-3000:]
    assert load.acked, f"no upload was acknowledged: {load.failed}"
    assert any(200 <= code < 300 for code in load.moves), load.moves
    assert not [code for code in load.moves if code >= 500], load.moves
    assert not ghosts, ghosts
    # /stats/ agrees with the lists, as the server answered them.
    assert stats["total_images"] == total_images == len(images)
    assert stats["total_persons"] == total_persons == len(persons)
    assert stats["total_faces"] == sum(image["face_count"] for image in images) \
        == sum(person["face_count"] for person in persons)
    listed = {image["_id"] for image in images}
    assert set(load.acked) <= listed

    # The same DATA_DIR opened here, gunicorn stopped: only the checker runs.
    store = open_store("", "face_gallery", str(server.data_dir))
    try:
        statuses = {i["_id"]: i.get("status") for i in store.db.images.find({}, {"status": 1})}
        assert all(statuses.get(image_id) == "ready" for image_id in [*load.acked, *again]), (
            statuses)
        assert "pending" not in statuses.values(), statuses
        assert set(statuses) == listed | again, "listed (and uploaded again) images and stored "\
            "images differ"
        try:
            check_invariants(store)
        except AssertionError as err:
            left = repair.run(store, dry_run=True)
            raise AssertionError(f"invariants broken right after the load: {err}; "
                                 f"repair would still do {left}") from err
        # Nothing a dead worker left is still waiting for a repair.
        left = repair.counts(repair.run(store, dry_run=True))
        assert not any(left.get(kind) for kind in ABANDONED), left
    finally:
        store.close()
