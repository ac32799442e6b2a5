"""Benchmark: the blob stores — upload and ``GET /file`` of 1, 10 and 30 MB photos, and the
database size per 1,000 photos, on each store.

Photos are noisy JPEGs (noise keeps them large; no faces, so the analysis is the decode and
one detection pass). For each database backend and the stores it offers (GridFS needs
MongoDB: measured on MongoDB when ``TEST_MONGODB_URI`` is set, on mongomock's collections
otherwise, and said so) it prints, through the Flask app in this process:

* upload: seconds a photo (analysis included) and the Python heap's peak over the photo's
  size (tracemalloc: bytes, base64 text, documents; not dlib's own buffers);
* ``GET /file``: seconds and the heap's peak over the photo's size, the body read piece by
  piece as a server sends it (files of 4 MB and more are sent from disk);
* store only: ``save_blob`` + ``read_blob`` of the photo's bytes, no analysis;
* database size per 1,000 photos of the 1 MB kind: SQLite file growth on the embedded store,
  BSON bytes of the documents on MongoDB/mongomock; files on disk apart.

Nothing asserts; README ("Photos and blobs") has a run.

    .venv/bin/python -m bench.blobs [--sizes 1,10,30] [--repeat 2] [--count 20]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
import tracemalloc
import typing as t
from pathlib import Path

import numpy as np
from PIL import Image

from app import create_app
from services import storage
from services.storage import Store
from services.storage import open_store

#: (width, height, JPEG quality) giving photos of about 1, 10 and 30 MB of noise.
SHAPES = {1: (1400, 1050, 94), 10: (4000, 3000, 97), 30: (6000, 4500, 99)}
STORES = {"embedded": ("files", "inline"), "mongomock": ("gridfs", "files", "inline"),
          "mongodb": ("gridfs", "files", "inline")}


def noisy_jpeg(megabytes: int, seed: int) -> bytes:
    width, height, quality = SHAPES[megabytes]
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (height // 4, width // 4, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    grain = rng.integers(-14, 14, (height, width, 3))
    pixels = np.clip(smooth.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()


def open_backend(backend: str, folder: Path) -> Store:
    if backend == "embedded":
        store = open_store("", "bench_blobs", str(folder / "data"))
    elif backend == "mongomock":
        store = open_store("mongomock://", "bench_blobs", "")
    else:
        store = open_store(os.environ["TEST_MONGODB_URI"], f"bench_blobs_{os.getpid()}", "")
    store.reset()
    store.ensure_indexes()
    return store


def peak_over(run: t.Callable[[], t.Any]) -> tuple[float, float]:
    """(seconds, the heap's peak in bytes above where it started) of ``run``."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    start, _ = tracemalloc.get_traced_memory()
    began = time.perf_counter()
    run()
    seconds = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak - start


def throughput(backend: str, kind: str, sizes: list[int], repeat: int) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        store = open_backend(backend, Path(tmp))
        app = create_app({"FLASK_ENV": "testing", "LOG_LEVEL": "ERROR", "INGEST_WORKERS": 1,
                          "RATELIMIT_ENABLED": False, "BLOB_STORE": kind,
                          "DATA_DIR": str(Path(tmp) / "files")}, store=store, environ={})
        client = app.test_client()
        # dlib's models load on the first analysis: not in the figures.
        client.post("/images/upload", data={"file": (io.BytesIO(noisy_jpeg(1, seed=7)), "w.jpg")},
                    content_type="multipart/form-data")
        for megabytes in sizes:
            uploads, gets, stored = [], [], []
            refused = ""
            for n in range(repeat):
                data = noisy_jpeg(megabytes, seed=1000 * megabytes + n)
                answer: dict[str, t.Any] = {}

                def post(data: bytes = data, answer: dict[str, t.Any] = answer) -> None:
                    answer["r"] = client.post("/images/upload", data={
                        "file": (io.BytesIO(data), "p.jpg")}, content_type="multipart/form-data")

                uploads.append(peak_over(post))
                response = answer["r"]
                if response.status_code != 201:
                    refused = f"{response.status_code} {response.json['error_type']}"
                    break
                image_id = response.json["data"]["image_id"]

                def get(image_id: str = image_id, length: int = len(data)) -> None:
                    # Read piece by piece, as a server sends it: the heap is the app's.
                    with client.get(f"/images/{image_id}/file", buffered=False) as got:
                        assert sum(len(piece) for piece in got.response) == length

                gets.append(peak_over(get))
                began = time.perf_counter()
                doc = store.save_blob("original", data, "image/jpeg", kind=kind)
                store.read_blob(doc, "original")
                stored.append(time.perf_counter() - began)
            size = len(data) / 2**20
            if refused:
                lines.append(f"| {backend} | {kind} | {size:.1f} MB | refused: {refused} "
                             "| | | | |")
                continue
            lines.append(
                f"| {backend} | {kind} | {size:.1f} MB "
                f"| {median(s for s, _ in uploads):.2f} s "
                f"| {median(p for _, p in uploads) / len(data):.1f}x "
                f"| {median(s for s, _ in gets) * 1000:.0f} ms "
                f"| {median(p for _, p in gets) / len(data):.2f}x "
                f"| {median(stored) * 1000:.0f} ms |")
        store.close()
    return lines


def database_size(backend: str, kind: str, count: int) -> str:
    """Database (and files) growth for ``count`` 1 MB photos' blob documents, per 1,000."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_backend(backend, Path(tmp))
        app = create_app({"FLASK_ENV": "testing", "LOG_LEVEL": "ERROR", "BLOB_STORE": kind,
                          "DATA_DIR": str(Path(tmp) / "files"), "RATELIMIT_ENABLED": False},
                         store=store, environ={})
        store = app.extensions["face_gallery"].store  # its blob stores attached
        before = _database_bytes(store, Path(tmp))
        photo_bytes = 0
        for n in range(count):
            data = noisy_jpeg(1, seed=n)
            photo_bytes += len(data)
            doc = {"_id": storage.new_id(), "mime_type": "image/jpeg",
                   **store.save_blob("original", data, "image/jpeg")}
            store.db.image_blobs.insert_many([doc])
        grown = _database_bytes(store, Path(tmp)) - before
        files = sum(f.stat().st_size for f in (Path(tmp) / "files").rglob("*") if f.is_file())
        if backend == "embedded":
            files = sum(f.stat().st_size for f in (Path(tmp) / "data" / "blobs").rglob("*")
                        if f.is_file())
        store.close()
    per = 1000 / count
    return (f"| {backend} | {kind} | {photo_bytes * per / 2**30:.2f} GiB "
            f"| {grown * per / 2**30:.3f} GiB | {files * per / 2**30:.2f} GiB "
            f"| {grown / photo_bytes:.2f}x |")


def _database_bytes(store: Store, folder: Path) -> int:
    if store.backend == "embedded":
        return sum(f.stat().st_size for f in (folder / "data").glob("*") if f.is_file())
    import bson

    return sum(len(bson.encode(doc)) for name in ("image_blobs", "blobs.files", "blobs.chunks")
               for doc in store.db[name].find({}))


def median(values: t.Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,30")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--count", type=int, default=20, help="photos for the size figures")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = ["embedded", "mongodb" if os.environ.get("TEST_MONGODB_URI") else "mongomock"]
    print(f"# blob stores on {platform.node()} ({os.cpu_count()} cores), "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    if "mongomock" in backends:
        print("# no TEST_MONGODB_URI: GridFS measured on mongomock's collections (in memory: "
              "its times are not MongoDB's; its sizes are the BSON MongoDB would store)")
    print("\n| backend | store | photo | upload | upload heap peak / photo | GET /file "
          "| GET heap peak / photo | save+read only |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for backend in backends:
        for kind in STORES[backend]:
            for line in throughput(backend, kind, sizes, args.repeat):
                print(line, flush=True)
    print(f"\n| backend | store | photos per 1,000 | database growth per 1,000 "
          f"| files per 1,000 | database / photo bytes |   ({args.count} photos of ~1 MB)")
    print("| --- | --- | --- | --- | --- | --- |")
    for backend in backends:
        for kind in STORES[backend]:
            print(database_size(backend, kind, args.count), flush=True)


if __name__ == "__main__":
    main()
