"""`make fuzz`: schemathesis against a live server on the embedded store.

Starts ``python app.py`` (with its jobs worker) on a free loopback port and a fresh DATA_DIR,
waits for ``/health``, uploads a group photo (so face and person routes meet real ids), runs
``schemathesis run`` over ``/openapi.json`` with every check (settings in
``schemathesis.toml``), stops the server and exits with schemathesis' status.
The suite's own short run is ``tests/test_openapi.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                message = f"the server did not answer {url} within {timeout:.0f} s"
                raise SystemExit(message) from None
        time.sleep(0.3)


def seed_gallery(base: str) -> str:
    """Upload a group photo so the face and person routes meet real ids (random ids only reach
    their 404s); returns the ``[parameters]`` table naming them."""
    sys.path.insert(0, str(ROOT))
    from tests.photos import group_photo

    boundary = "fuzz-seed-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"group.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    body += group_photo() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{base}/images/upload", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        upload = json.load(answer)["data"]
    faces = upload["faces"]
    print(f"seeded image {upload['image_id']} with {len(faces)} faces", flush=True)
    if not faces:
        return ""
    # Not the image id: a generated DELETE of it would take the faces along early in the run.
    return ("\n[parameters]\n"
            f'"path.face_id" = "{faces[0]["face_id"]}"\n'
            f'"path.person_id" = "{faces[-1]["person_id"]}"\n')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=50,
                        help="generated requests per operation and phase (default 50)")
    parser.add_argument("--max-time", type=int, default=600,
                        help="time budget in seconds for the whole run (default 600)")
    parser.add_argument("--seed", type=int, help="reproduce an earlier run")
    parser.add_argument("extra", nargs="*", help="more `schemathesis run` options (after --)")
    args = parser.parse_args(argv)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="face-gallery-fuzz-") as data_dir:
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "DATA_DIR": data_dir,
               "FLASK_ENV": "development", "RATELIMIT_ENABLED": "false",
               "LOG_LEVEL": os.environ.get("LOG_LEVEL", "warning"), "INGEST_WORKERS": "1"}
        env.pop("MONGODB_URI", None)
        server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env)
        try:
            wait_for(f"{base}/health", timeout=120)
            config = Path(data_dir) / "schemathesis.toml"
            config.write_text((ROOT / "schemathesis.toml").read_text() + seed_gallery(base))
            command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
                       "run",
                       f"{base}/openapi.json",
                       "--max-examples", str(args.max_examples),
                       "--max-time", str(args.max_time), "--workers", "1"]
            if args.seed is not None:
                command += ["--seed", str(args.seed)]
            command += args.extra
            print("$", " ".join(command), flush=True)
            return subprocess.call(command, cwd=ROOT)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    sys.exit(main())
