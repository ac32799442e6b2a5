"""Benchmark: ingesting a photo library, ours against the limit, the naive way and the peer.

Two photo sets: ``dev`` (the labelled photos of ../shared/faces/dev as they are) and ``12mp``
(12 MP portraits, group photos and crowds built from them by ``bench/photosets.py``). Each set
goes through five paths, each in its own process tree, timed wall-clock with the peak memory
of the whole tree:

* ``limit``: decode + detect at our detection settings + encode, straight dlib through
  ``FaceEngine``, one process per core, no HTTP, no database: the fastest ingest can be;
* ``naive``: the seed's way, ``face_recognition.face_locations`` at full resolution (one
  upsample) and ``face_encodings``, one process;
* ``peer``: face_recognition's own ``face_detection --cpus N`` (full resolution, no upsample,
  every core), detection only: the tool a user would reach for instead;
* ``api``: ours through HTTP, gunicorn (one web worker, its ingest pool on every core) on the
  embedded store, ``upload-multiple`` in batches of ``BATCH`` photos, ``STREAMS`` requests in
  flight at once;
* ``import``: ours through ``flask gallery import`` on the embedded store.

Faces "lost" are those of the naive path (full resolution, one upsample: the reference) that
ours did not find (IoU < 0.3 after mapping boxes to the photo's pixels), split at 80 px (the
shorter side of the reference box). Nothing asserts on time: the block prints figures,
ratios and the goals of issue 19, and exits 0.

    .venv/bin/python -m bench.ingest [--sets dev,12mp] [--workers N] [--skip naive,peer]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import psutil

from bench import photosets
from tests import devset

ROOT = Path(__file__).resolve().parent.parent
BATCH = 8
#: Upload requests in flight at once (the server's gunicorn worker has 2 threads).
STREAMS = 2
SMALL_FACE = 80
PROJECTED = 20_000
PATHS = ("limit", "naive", "peer", "api", "import")
Box = tuple[int, int, int, int]


@dataclass
class Run:
    """One path over one set: time, memory and the faces it found per photo."""

    seconds: float
    peak_rss: int
    faces: dict[str, list[Box]] = field(default_factory=dict)

    @property
    def found(self) -> int:
        return sum(len(boxes) for boxes in self.faces.values())


def _environment(workers: int) -> dict[str, str]:
    env = dict(os.environ)
    # One BLAS thread a process: the paths bring their own parallelism.
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", INGEST_WORKERS=str(workers),
               PYTHONWARNINGS="ignore")
    return env


def _measure(command: list[str], env: dict[str, str], *, cwd: Path = ROOT,
             stdin: bytes | None = None) -> tuple[float, int, str]:
    """Run ``command``; returns (seconds, peak RSS of its process tree, stdout)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stdin=subprocess.PIPE if stdin is not None else None,
                               stderr=subprocess.DEVNULL)
    peak = _watch(process.pid)
    out, _ = process.communicate(stdin)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited {process.returncode}")
    return seconds, peak(), out.decode()


def _watch(pid: int) -> t.Callable[[], int]:
    """Sample the RSS of ``pid`` and its children every 50 ms; returns the peak getter."""
    peak = [0]
    root = psutil.Process(pid)

    def sample() -> None:
        while root.is_running() and root.status() != psutil.STATUS_ZOMBIE:
            try:
                total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            except psutil.Error:
                total = 0
            peak[0] = max(peak[0], total)
            time.sleep(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()

    def result() -> int:
        watcher.join(timeout=1)
        return peak[0]

    return result


# -- the paths that run dlib directly (this file, run again as a worker) -----------------

_LIMIT = "limit"
_NAIVE = "naive"


def _worker_main(kind: str, workers: int, files: list[str]) -> None:
    """Inside a measured process: analyse ``files`` and print their boxes as JSON."""
    if kind == _LIMIT:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            boxes = dict(zip(files, pool.map(_limit_one, files, chunksize=1), strict=True))
    else:
        boxes = {path: _naive_one(path) for path in files}
    print(json.dumps(boxes))


def _limit_one(path: str) -> list[Box]:
    """Decode, detect at the product's settings and encode, as ingest does, without storing."""
    import config
    from services import imaging
    from services import ingest

    options = ingest.AnalysisOptions.from_settings(config.load_config())
    decoded = imaging.decode_upload(Path(path).read_bytes(),
                                    allowed_formats=options.allowed_formats,
                                    max_pixels=options.max_pixels)
    return [face.box for face in ingest.engine_for(options).analyse(decoded.rgb)]


def _naive_one(path: str) -> list[Box]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition

    image = face_recognition.load_image_file(path)
    boxes = face_recognition.face_locations(image)  # hog, one upsample, full resolution
    face_recognition.face_encodings(image, boxes)
    return [tuple(int(v) for v in box) for box in boxes]


def run_direct(kind: str, files: list[Path], workers: int) -> Run:
    command = [sys.executable, "-m", "bench.ingest", "--worker", kind, "--workers",
               str(workers), "--", *map(str, files)]
    seconds, peak, out = _measure(command, _environment(workers))
    faces = {Path(k).name: [tuple(b) for b in v] for k, v in json.loads(out).items()}
    return Run(seconds, peak, faces)


def run_peer(files: list[Path], workers: int) -> Run:
    """face_recognition's ``face_detection --cpus N`` over a folder of the photos."""
    with tempfile.TemporaryDirectory() as folder:
        for path in files:
            os.symlink(path, Path(folder) / path.name)
        command = [str(Path(sys.executable).parent / "face_detection"), "--cpus",
                   str(workers), folder]
        seconds, peak, out = _measure(command, _environment(workers))
    faces: dict[str, list[Box]] = {path.name: [] for path in files}
    for line in out.splitlines():
        name, *box = line.split(",")
        if box:
            faces[Path(name).name].append(t.cast(Box, tuple(int(v) for v in box)))
    return Run(seconds, peak, faces)


# -- ours -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post_batches(port: int, files: list[Path]) -> dict[str, list[Box]]:
    """``upload-multiple`` in batches of ``BATCH``, ``STREAMS`` requests in flight at once
    (as a front end uploading a folder does): the server's ingest pool is fed across batch
    boundaries instead of idling while a batch's last photo finishes and the next arrives."""
    import concurrent.futures
    import urllib.request
    import uuid

    def post(batch: list[Path]) -> dict[str, list[Box]]:
        boundary = uuid.uuid4().hex
        body = bytearray()
        for path in batch:
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                     f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream"
                     "\r\n\r\n").encode()
            body += path.read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/images/upload-multiple", data=bytes(body),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = json.loads(response.read())["data"]
        return {path.name: _original_boxes(path, result)
                for path, result in zip(batch, answer["results"], strict=True)}

    faces: dict[str, list[Box]] = {}
    batches = [files[start:start + BATCH] for start in range(0, len(files), BATCH)]
    with concurrent.futures.ThreadPoolExecutor(STREAMS) as requests:
        for found in requests.map(post, batches):
            faces.update(found)
    return faces


def _original_boxes(path: Path, result: dict[str, t.Any]) -> list[Box]:
    """Boxes of an upload result, mapped from the stored copy to the photo's pixels."""
    from PIL import Image

    if not result.get("success"):
        return []
    with Image.open(path) as img:
        width = img.size[0]
    scale = width / result["width"]
    return [t.cast(Box, tuple(round(f["face_location"][k] * scale)
                              for k in ("top", "right", "bottom", "left")))
            for f in result["faces"]]


def run_gunicorn(files: list[Path], workers: int) -> Run:
    data_dir = tempfile.mkdtemp(prefix="bench-ingest-")
    port = _free_port()
    env = _environment(workers)
    env.update(DATA_DIR=data_dir, PORT=str(port), HOST="127.0.0.1", WEB_CONCURRENCY="1",
               LOG_LEVEL="warning", MONGODB_URI="", MAX_CONTENT_LENGTH=str(2**30))
    server = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c",
                               "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port)
        peak = _watch(server.pid)
        started = time.perf_counter()
        faces = _post_batches(port, files)
        seconds = time.perf_counter() - started
        server.terminate()
        server.wait(timeout=60)
        return Run(seconds, peak(), faces)
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_for(port: int, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer")


def run_import(files: list[Path], workers: int) -> Run:
    data_dir = tempfile.mkdtemp(prefix="bench-import-")
    with tempfile.TemporaryDirectory() as folder:
        for path in files:
            os.symlink(path, Path(folder) / path.name)
        env = _environment(workers)
        env.update(DATA_DIR=data_dir, MONGODB_URI="", LOG_LEVEL="warning")
        command = [str(Path(sys.executable).parent / "flask"), "gallery", "import", folder,
                   "--workers", str(workers)]
        try:
            seconds, peak, _ = _measure(command, env)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    return Run(seconds, peak)


# -- report -------------------------------------------------------------------------------

def _iou(a: Box, b: Box) -> float:
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[1], b[1]) - max(a[3], b[3])
    inter = max(0, height) * max(0, width)
    area = (a[2] - a[0]) * (a[1] - a[3]) + (b[2] - b[0]) * (b[1] - b[3]) - inter
    return inter / area if area else 0.0


def lost(reference: Run, ours: Run) -> tuple[int, int, int]:
    """Reference faces ours missed: (under 80 px, 80 px and up, smallest missed size)."""
    small = large = 0
    smallest = 0
    for name, boxes in reference.faces.items():
        found = ours.faces.get(name, [])
        for box in boxes:
            if not any(_iou(box, other) >= 0.3 for other in found):
                size = min(box[2] - box[0], box[1] - box[3])
                small, large = (small + 1, large) if size < SMALL_FACE else (small, large + 1)
                smallest = size if not smallest else min(smallest, size)
    return small, large, smallest


def _photo_sets(names: list[str]) -> dict[str, list[Path]]:
    sets: dict[str, list[Path]] = {}
    if "dev" in names:
        sets["dev"] = sorted(p for p in devset.DEV_SET.iterdir()
                             if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if "12mp" in names:
        sets["12mp"] = [photo.path for photo in photosets.build()]
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="dev,12mp")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip", default="", help=f"paths to leave out of {PATHS}")
    parser.add_argument("--photos", type=int, default=0, help="only the first N of each set")
    parser.add_argument("--worker", choices=[_LIMIT, _NAIVE], help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker_main(args.worker, args.workers, args.files)
        return 0
    if not devset.available():
        print(f"SKIPPED: no labelled photos at {devset.DEV_SET}")
        return 0
    skip = set(filter(None, args.skip.split(",")))
    print(f"bench/ingest.py on {platform.node()}: {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {args.workers} workers")
    for name, files in _photo_sets(args.sets.split(",")).items():
        files = files[:args.photos] if args.photos else files
        megapixels = _megapixels(files)
        print(f"\n== {name}: {len(files)} photos, {megapixels:.1f} MP on average")
        runs: dict[str, Run] = {}
        for path_name, run in (("limit", lambda f: run_direct(_LIMIT, f, args.workers)),
                               ("naive", lambda f: run_direct(_NAIVE, f, 1)),
                               ("peer", lambda f: run_peer(f, args.workers)),
                               ("api", lambda f: run_gunicorn(f, args.workers)),
                               ("import", lambda f: run_import(f, args.workers))):
            if path_name in skip:
                continue
            runs[path_name] = run(files)
            r = runs[path_name]
            faces = f"{r.found:4d} faces" if r.faces else "   (faces not read back)"
            print(f"{path_name:7s} {r.seconds:8.1f} s  {len(files) / r.seconds:6.2f} photos/s  "
                  f"{faces}  peak {r.peak_rss / 2**20:7.0f} MiB  "
                  f"20k photos in {PROJECTED * r.seconds / len(files) / 3600:5.1f} h")
        _ratios(runs)
    return 0


def _ratios(runs: dict[str, Run]) -> None:
    for ours in ("api", "import"):
        if ours not in runs:
            continue
        line = [f"{ours}:"]
        for other in ("naive", "limit", "peer"):
            if other in runs:
                line.append(f"{runs[other].seconds / runs[ours].seconds:5.2f}x {other}")
        if "naive" in runs and runs[ours].faces:
            small, large, smallest = lost(runs["naive"], runs[ours])
            line.append(f"lost vs naive: {large} >= {SMALL_FACE} px, {small} < {SMALL_FACE} px"
                        + (f" (smallest missed {smallest} px)" if smallest else ""))
        print("  ".join(line))
    if "naive" in runs and "peer" in runs:
        small, large, _ = lost(runs["naive"], runs["peer"])
        print(f"peer lost vs naive: {large} >= {SMALL_FACE} px, {small} < {SMALL_FACE} px")
    print("goals (12 MP): ours >= 6x naive (aim 10x), >= 0.8x limit, no face of 80 px or more "
          "lost")


def _megapixels(files: list[Path]) -> float:
    from PIL import Image

    total = 0
    for path in files:
        with Image.open(path) as img:
            total += img.size[0] * img.size[1]
    return total / len(files) / 1e6 if files else 0.0


if __name__ == "__main__":
    sys.exit(main())
