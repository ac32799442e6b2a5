"""Benchmark: the API's hot reads and one write on the embedded store at full gallery size.

Fills a tinymongo (SQLite) store with synthetic data shaped like what the upload pipeline
writes (``services/gallery.py`` ``upload_image``/``_write_faces``, ``services/people.py``
``new_person_doc``), then measures start-up in a fresh process and the median/p90 latency of
the list, detail, move and stats endpoints through ``app.test_client()``.

Synthetic data (defaults: 20,000 images, 100,000 faces, about 3,600 persons, 20 albums):

* images: ``seq`` 1..N in upload order, ``status: "ready"``, 70 % filed in one of the albums
  (``section_id`` always ""), faces per image drawn multinomially (mean faces/images, a few
  images have none), 60 % with an EXIF ``taken_at`` (``photo_date`` is it, else ``created_at``);
* image blobs: ``original_image_base64`` is a data URI of one 160x120 JPEG (about 1.6 KB, 2.2 KB
  as base64) with a per-image JPEG comment, so every image has its own sha256 (also claimed in
  ``image_hashes``); the result block prints the sizes actually stored;
* faces: ``seq`` in image order, a random float32 128-d embedding, ``face_location`` inside the
  image, ``quality_score`` in [0.3, 1), ``is_manual_assignment: False``; crops in ``face_crops``
  are a data URI of one 32x32 JPEG (about 750 B);
* persons: clusters of 5-50 faces, never two faces of one image (each image takes the persons
  with the most room left, ties broken at random), so ``image_count == face_count``; the
  thumbnail is the best-quality face; counters ``images``, ``faces``, ``person_number`` hold
  the final values.

Usage (from the repo root)::

    .venv/bin/python -m bench.store                       # full size, temp dir, removed after
    .venv/bin/python -m bench.store --quick               # 2,000 images / 10,000 faces
    .venv/bin/python -m bench.store --keep /tmp/bench-db  # keep the data; a rerun reuses it
    .venv/bin/python -m bench.store --keep /tmp/bench-db --profile   # cProfile each miss
    .venv/bin/python -m bench.store --keep /tmp/bench-db --profile 50  # ... each over 50 ms

Nothing here asserts on time: each line says PASS or MISS against the goal (200 ms a request,
5 s start-up) and the script exits 0 unless a response is wrong.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from datetime import datetime
from datetime import timedelta

import numpy as np
from PIL import Image

from services import bookkeeping
from services import storage
from services.storage import Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DB_NAME = "bench"
BATCH = 1000
REQUEST_GOAL_MS = 200.0
STARTUP_GOAL_S = 5.0
ALBUMS = 20
FILED_SHARE = 0.7
EXIF_SHARE = 0.6
IMAGE_W, IMAGE_H = 160, 120

Doc = dict[str, t.Any]


# -- synthetic data -----------------------------------------------------------------------

def _jpeg(width: int, height: int, seed: int, quality: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    noise = rng.integers(0, 24, size=base.shape)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: still valid, different bytes."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def _person_sizes(total_faces: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster sizes in 5..50 summing to ``total_faces``."""
    count = max(1, round(total_faces / 27.5))
    if total_faces < 5 * count or total_faces > 50 * count:
        count = max(1, math.ceil(total_faces / 50))
    sizes = rng.integers(5, 51, size=count)
    diff = total_faces - int(sizes.sum())
    while diff:
        step = 1 if diff > 0 else -1
        room = sizes < 50 if step > 0 else sizes > 5
        candidates = np.flatnonzero(room)
        pick = rng.choice(candidates, size=min(abs(diff), len(candidates)), replace=False)
        sizes[pick] += step
        diff -= step * len(pick)
    return sizes


def _assign_persons(face_counts: np.ndarray, sizes: np.ndarray, rng: np.random.Generator
                    ) -> list[np.ndarray]:
    """For each image, ``face_counts[i]`` distinct persons, each person used ``sizes[p]`` times.

    Each image takes the persons with the most room left (Ryser's greedy: it succeeds whenever
    an assignment exists); a random jitter below 1 only breaks ties.
    """
    room = sizes.astype(np.float64)
    chosen = []
    for count in face_counts:
        if count == 0:
            chosen.append(np.empty(0, dtype=np.int64))
            continue
        keys = room + rng.random(len(room)) * 0.5
        top = np.argpartition(-keys, count - 1)[:count]
        if room[top].min() < 1:
            raise RuntimeError("person assignment ran out of room")
        room[top] -= 1
        chosen.append(rng.permutation(top))
    assert not room.any(), "every person filled exactly"
    return chosen


def fill(store: Store, n_images: int, n_faces: int, seed: int = 7) -> dict[str, int]:
    """Write the synthetic gallery; returns the sizes written."""
    rng = np.random.default_rng(seed)
    base_image = _jpeg(IMAGE_W, IMAGE_H, seed, quality=40)
    crop_uri = storage.data_uri(_jpeg(32, 32, seed + 1, quality=60), "image/jpeg")
    start = datetime(2024, 1, 1)

    albums = []
    for i in range(ALBUMS):
        moment = start + timedelta(minutes=i)
        albums.append({"_id": storage.new_id(), "name": f"Album {i + 1}",
                       "description": f"Synthetic album {i + 1}", "created_at": moment,
                       "updated_at": moment})
        store.insert_album(albums[-1])

    face_counts = rng.multinomial(n_faces, np.full(n_images, 1.0 / n_images))
    sizes = _person_sizes(n_faces, rng)
    members = _assign_persons(face_counts, sizes, rng)

    # Persons: the template comes from the real constructor, so the shape follows the code.
    template = bookkeeping.new_person_doc(store)
    person_ids = [storage.new_id() for _ in sizes]
    person_best: list[tuple[float, str]] = [(-1.0, "")] * len(sizes)
    person_first: list[datetime | None] = [None] * len(sizes)
    person_last: list[datetime | None] = [None] * len(sizes)

    images, blobs, hashes, faces, crops = [], [], [], [], []
    face_seq = 0

    def flush(final: bool = False) -> None:
        if len(faces) >= BATCH or (final and faces):
            store.insert_faces(faces, crops)
            faces.clear()
            crops.clear()
        if len(images) >= BATCH or (final and images):
            store._insert("image_blobs", blobs)
            store._insert("images", images)
            store._insert("image_hashes", hashes)
            images.clear()
            blobs.clear()
            hashes.clear()

    album_of = rng.integers(0, ALBUMS, size=n_images)
    filed = rng.random(n_images) < FILED_SHARE
    has_exif = rng.random(n_images) < EXIF_SHARE
    for i in range(n_images):
        seq = i + 1
        image_id = storage.new_id()
        moment = start + timedelta(hours=1, seconds=37 * i)
        data = _with_comment(base_image, f"bench image {seq}")
        sha256 = hashlib.sha256(data).hexdigest()
        taken_at = moment - timedelta(days=int(rng.integers(0, 3650))) if has_exif[i] else None
        exif = ({"taken_at": taken_at, "camera_make": "Bench", "camera_model": "Synth 1"}
                if taken_at else {})
        album = albums[album_of[i]]["_id"] if filed[i] else ""
        count = int(face_counts[i])
        images.append({
            "_id": image_id, "seq": seq, "status": "ready", "filename": f"IMG_{seq:06d}.jpg",
            "mime_type": "image/jpeg", "sha256": sha256, "size_bytes": len(data),
            "original_size_bytes": len(data) * 40, "original_format": "JPEG",
            "width": IMAGE_W, "height": IMAGE_H, "exif": exif, "taken_at": taken_at,
            "photo_date": taken_at or moment, "album_id": album, "section_id": "",
            "face_count": count, "created_at": moment, "updated_at": moment,
        })
        blobs.append({"_id": image_id, "mime_type": "image/jpeg",
                      "original_image_base64": storage.data_uri(data, "image/jpeg")})
        hashes.append({"_id": sha256, "image_id": image_id})
        # Faces side by side, left to right, 20-30 px boxes inside the 160x120 image.
        lefts = np.sort(rng.integers(0, IMAGE_W - 30, size=count)) if count else []
        for k, person in enumerate(members[i]):
            face_seq += 1
            face_id = storage.new_id()
            left = int(lefts[k])
            side = int(rng.integers(20, 31))
            top = int(rng.integers(0, IMAGE_H - side))
            quality = round(float(rng.uniform(0.3, 1.0)), 4)
            vector = rng.standard_normal(128).astype(np.float32) * 0.09
            faces.append({
                "_id": face_id, "seq": face_seq, "image_id": image_id, "image_seq": seq,
                "person_id": person_ids[person],
                "embedding": storage.embedding_to_bytes(vector),
                "face_location": {"top": top, "right": left + side, "bottom": top + side,
                                  "left": left},
                "quality_score": quality, "detector_score": round(float(rng.uniform(0, 2)), 4),
                "is_manual_assignment": False, "assigned_by": "auto",
                "cropped_face_filename": f"face_{face_id}.jpg",
                "created_at": moment, "updated_at": moment,
            })
            crops.append({"_id": face_id, "mime_type": "image/jpeg",
                          "cropped_face_base64": crop_uri})
            if quality > person_best[person][0]:
                person_best[person] = (quality, face_id)
            if person_first[person] is None:
                person_first[person] = moment
            person_last[person] = moment
        flush()
    flush(final=True)

    persons = []
    for p, person_id in enumerate(person_ids):
        number = p + 1
        name = f"Person {number}"
        quality, face_id = person_best[p]
        persons.append({
            **template, "_id": person_id, "number": number, "name": name,
            "name_lc": name.lower(), "face_count": int(sizes[p]), "image_count": int(sizes[p]),
            "manual_face_count": 0, "thumbnail_face_id": face_id, "thumbnail_quality": quality,
            "created_at": person_first[p], "updated_at": person_last[p],
        })
    for i in range(0, len(persons), BATCH):
        store.insert_persons(persons[i: i + BATCH])

    for name, value in (("images", n_images), ("faces", face_seq),
                        ("person_number", len(persons))):
        store.db.counters.update_one({"_id": name}, {"$set": {"v": value}}, upsert=True)
    return {"images": n_images, "faces": face_seq, "persons": len(persons), "albums": ALBUMS}


# -- measuring ----------------------------------------------------------------------------

STARTUP_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
from app import create_app

app = create_app({"FLASK_ENV": "testing", "MONGODB_URI": "", "DATA_DIR": sys.argv[2],
                  "DATABASE_NAME": sys.argv[3]}, environ={})
t1 = time.perf_counter()
client = app.test_client()
health = client.get("/health")
t2 = time.perf_counter()
images = client.get("/images/")
t3 = time.perf_counter()
print(json.dumps({"create": t1 - t0, "health": t2 - t0, "images": t3 - t0,
                  "status": [health.status_code, images.status_code],
                  "listed": len(images.get_json()["data"]["images"])}))
"""


def measure_startup(data_dir: str) -> dict[str, t.Any]:
    done = subprocess.run(
        [sys.executable, "-c", STARTUP_SCRIPT, ROOT, data_dir, DB_NAME], cwd=ROOT,
        capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"start-up run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["status"] != [200, 200] or not result["listed"]:
        raise RuntimeError(f"start-up responses wrong: {result}")
    return result


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


class Bench:
    def __init__(self, client: t.Any, reps: int) -> None:
        self.client = client
        self.reps = reps
        self.results: list[tuple[str, float, float]] = []
        self.calls: dict[str, t.Callable[[], t.Any]] = {}

    def run(self, label: str, call: t.Callable[[], t.Any],
            check: t.Callable[[t.Any], None]) -> t.Any:
        first = call()  # warm-up, also checked
        check(first)
        timings = []
        for _ in range(self.reps):
            started = time.perf_counter()
            response = call()
            timings.append((time.perf_counter() - started) * 1000)
            check(response)
        self.results.append((label, statistics.median(timings), p90(timings)))
        self.calls[label] = call
        return first


def _ok(response: t.Any) -> dict[str, t.Any]:
    if response.status_code != 200:
        raise AssertionError(f"{response.request.method} {response.request.full_path} -> "
                             f"{response.status_code}: {response.get_data(as_text=True)[:500]}")
    body = response.get_json()
    if not body or not body.get("success") or body.get("data") is None:
        raise AssertionError(f"empty body from {response.request.full_path}")
    return body["data"]


def _list_of(key: str, expect: int | None) -> t.Callable[[t.Any], None]:
    def check(response: t.Any) -> None:
        data = _ok(response)
        got = len(data[key])
        if (expect is None and not got) or (expect is not None and got != expect):
            raise AssertionError(f"{response.request.full_path}: {got} {key}, "
                                 f"expected {expect if expect is not None else '> 0'}")
        if not data["total"]:
            raise AssertionError(f"{response.request.full_path}: total is 0")
    return check


def _nonempty(response: t.Any) -> None:
    _ok(response)


def measure_requests(data_dir: str, reps: int, sizes: dict[str, int]) -> Bench:
    from app import create_app

    app = create_app({"FLASK_ENV": "testing", "MONGODB_URI": "", "DATA_DIR": data_dir,
                      "DATABASE_NAME": DB_NAME, "LOG_LEVEL": "WARNING"}, environ={})
    client = app.test_client()
    store: Store = app.extensions["face_gallery"].store
    bench = Bench(client, reps)
    n_images, n_persons = sizes["images"], sizes["persons"]

    def get(url: str) -> t.Callable[[], t.Any]:
        return lambda: client.get(url)

    bench.run("GET /images/?limit=50", get("/images/?limit=50"), _list_of("images", 50))
    deep = min(10000, n_images // 2)
    bench.run(f"GET /images/?limit=50&offset={deep}", get(f"/images/?limit=50&offset={deep}"),
              _list_of("images", 50))
    album = max(store.list_albums(), key=lambda a: store.count_images_in("album_id", a["_id"]))
    bench.run("GET /images/?album_id=X", get(f"/images/?album_id={album['_id']}"),
              _list_of("images", None))
    first = bench.run("GET /persons/?limit=50", get("/persons/?limit=50"),
                      _list_of("persons", 50))
    bench.run("GET /persons/?limit=50&offset=10000", get("/persons/?limit=50&offset=10000"),
              _list_of("persons", max(0, min(50, n_persons - 10000))))
    mid = 3000 if n_persons >= 3050 else n_persons * 3 // 4
    bench.run(f"GET /persons/?limit=50&offset={mid}", get(f"/persons/?limit=50&offset={mid}"),
              _list_of("persons", max(0, min(50, n_persons - mid))))

    middle = store.images_newest(50, n_images // 2)[0]
    image = next(i for i in middle if i["face_count"] >= 2)
    bench.run("GET /images/{id}", get(f"/images/{image['_id']}"), _nonempty)

    face, target = _move_pair(store, image)
    owners = [face["person_id"], target]
    state = {"at": 0}

    def move() -> t.Any:
        state["at"] = 1 - state["at"]
        return client.put(f"/faces/{face['_id']}/move",
                          json={"target_person_id": owners[state["at"]]})

    bench.run("PUT /faces/{id}/move", move, _nonempty)
    if state["at"]:  # odd number of moves: put the face back
        _ok(client.put(f"/faces/{face['_id']}/move", json={"target_person_id": owners[0]}))
        state["at"] = 0

    biggest = _ok(first)["persons"][0]
    bench.run(f"GET /persons/{{id}} ({biggest['face_count']} faces)",
              get(f"/persons/{biggest['_id']}"), _nonempty)
    bench.run("GET /stats/", get("/stats/"), _nonempty)
    return bench


def _move_pair(store: Store, image: Doc) -> tuple[Doc, str]:
    """A face of ``image`` and a person with no face in that image."""
    faces = store.faces_of_image(image["_id"])
    face = faces[0]
    present = {f["person_id"] for f in faces}
    for other in store.images_newest(20, 10)[0]:
        for candidate in store.faces_of_image(other["_id"]):
            if candidate["person_id"] not in present:
                return face, candidate["person_id"]
    raise RuntimeError("no person to move the face to")


def profile(bench: Bench, labels: list[str]) -> None:
    for label in labels:
        profiler = cProfile.Profile()
        profiler.enable()
        bench.calls[label]()
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        print(f"\n=== cProfile: {label} ===")
        print(out.getvalue())


# -- main ---------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--faces", type=int, default=100000)
    parser.add_argument("--quick", action="store_true", help="2,000 images / 10,000 faces")
    parser.add_argument("--keep", metavar="DIR", help="data folder to keep (and reuse)")
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions (after 1 warm-up)")
    parser.add_argument("--profile", metavar="MS", type=float, nargs="?", const=REQUEST_GOAL_MS,
                        help="cProfile each request whose median or p90 exceeds MS "
                             f"(default: the goal, {REQUEST_GOAL_MS:.0f})")
    args = parser.parse_args()
    if args.quick:
        args.images, args.faces = 2000, 10000

    temp = None
    if args.keep:
        data_dir = os.path.abspath(args.keep)
    else:
        temp = tempfile.TemporaryDirectory(prefix="bench-store-")
        data_dir = temp.name
    try:
        return _run(args, data_dir)
    finally:
        if temp is not None:
            temp.cleanup()


def _run(args: argparse.Namespace, data_dir: str) -> int:
    database, backend = storage.open_database("", DB_NAME, data_dir)
    store = Store(database, backend)
    store.ensure_indexes()
    fill_s: float | None = None
    if store.count("images"):
        sizes = {"images": store.count("images"), "faces": store.count("faces"),
                 "persons": store.count("persons"), "albums": store.count("albums")}
        print(f"reusing the data in {data_dir}: {sizes}", flush=True)
    else:
        print(f"filling {data_dir}: {args.images} images, {args.faces} faces ...", flush=True)
        started = time.perf_counter()
        sizes = fill(store, args.images, args.faces)
        fill_s = time.perf_counter() - started
        print(f"fill took {fill_s:.1f} s: {sizes}", flush=True)
    blob = store.db.image_blobs.find_one({})["original_image_base64"]
    crop = store.db.face_crops.find_one({})["cropped_face_base64"]
    payload = (f"image blob {len(storage.data_uri_bytes(blob))} B ({len(blob)} B as data URI),"
               f" face crop {len(storage.data_uri_bytes(crop))} B")
    store.close()
    del store, database

    startup = measure_startup(data_dir)
    bench = measure_requests(data_dir, args.reps, sizes)

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    rows = [
        ("start-up: import + create_app", startup["create"] * 1000, None,
         startup["create"] <= STARTUP_GOAL_S),
        ("start-up: ... + first GET /health", startup["health"] * 1000, None,
         startup["health"] <= STARTUP_GOAL_S),
        ("start-up: ... + first GET /images/", startup["images"] * 1000, None,
         startup["images"] <= STARTUP_GOAL_S),
    ] + [(label, med, high, high <= REQUEST_GOAL_MS and med <= REQUEST_GOAL_MS)
         for label, med, high in bench.results]
    width = max(len(r[0]) for r in rows)
    lines = [
        "=" * 78,
        "Face Gallery API - embedded store benchmark (tinymongo sqlite)",
        f"machine : {os.cpu_count()} cpus, Python {platform.python_version()}, "
        f"{platform.platform()}",
        f"data    : {sizes['images']} images, {sizes['faces']} faces, {sizes['persons']} "
        f"persons, {sizes['albums']} albums",
        f"payload : {payload}",
        f"fill    : {f'{fill_s:.1f} s' if fill_s is not None else 'reused'}  ({data_dir})",
        f"goal    : each request <= {REQUEST_GOAL_MS:.0f} ms (median and p90), "
        f"start-up <= {STARTUP_GOAL_S:.0f} s; {args.reps} reps after 1 warm-up",
        "-" * 78,
        f"{'operation':<{width}}  {'median ms':>10}  {'p90 ms':>9}  result",
    ]
    for label, med, high, ok in rows:
        high_text = f"{high:9.1f}" if high is not None else f"{'-':>9}"
        lines.append(f"{label:<{width}}  {med:10.1f}  {high_text}  {verdict(ok)}")
    lines.append("=" * 78)
    print("\n".join(lines), flush=True)

    if args.profile is not None:
        slow = [label for label, med, high in bench.results if max(med, high) > args.profile]
        profile(bench, slow)
    return 0


if __name__ == "__main__":
    sys.exit(main())
