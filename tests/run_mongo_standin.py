"""Run the mongodb-marked tests against the MongoDB stand-in, then stop it (``make test``).

Starts ``tests/mongo_standin.py`` under the stand-in's virtualenv on a loopback port the
kernel picks (port 0, read back from its log), waits until it answers, runs the mongodb-marked
tests but the ``not_on_standin`` ones in a pytest process of their own, with
``TEST_MONGODB_URI`` pointing at it and ``TEST_MONGODB_STANDIN=1`` (tests/conftest.py: xfails on
the stand-in's known gaps, and dlib analyses each distinct picture once), and stops the server
whatever happens. When the stand-in cannot run (not installed, no port, no answer) the run is
skipped with the reason: that is not a test failure. When ``TEST_MONGODB_URI`` is already set,
a real server is there and the main test run covers these tests, so nothing runs here.

    .venv/bin/python tests/run_mongo_standin.py [--standin-python PATH] [pytest args...]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "tests" / "mongo_standin.py"
#: How long the server may take to listen (it starts in about a second).
START_SECONDS = 30.0
#: The mongodb-marked tests but those whose cost is dlib or processes, not storage calls.
SELECTION = "mongodb and not not_on_standin"
#: What nx-27017 0.8.1 logs once bound; with port 0 the kernel chose a free port, named here.
LISTENING = re.compile(r"Listening on 127\.0\.0\.1:(\d+)$", re.MULTILINE)


class Skip(Exception):
    """The stand-in cannot run here; the message says why."""


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _stop(process: subprocess.Popen, *, patience: float = 0.0) -> None:
    """Give a child ``patience`` seconds to end by itself, then SIGTERM, then SIGKILL."""
    try:
        process.wait(timeout=patience)
        return
    except subprocess.TimeoutExpired:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _start(python: str, workdir: str) -> tuple[subprocess.Popen, int]:
    """A running stand-in and its port, or :class:`Skip`."""
    output = Path(workdir, "server.out")
    with output.open("w") as log:
        # Its own session: a Ctrl-C reaches pytest and this driver, which then stops it.
        server = subprocess.Popen(
            [python, str(LAUNCHER), "--port", "0", "--workdir", workdir,
             "--parent-pid", str(os.getpid())],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    deadline = time.monotonic() + START_SECONDS
    while server.poll() is None and time.monotonic() < deadline:
        bound = LISTENING.search(output.read_text(errors="replace"))
        if bound and _answers(int(bound.group(1))):
            return server, int(bound.group(1))
        time.sleep(0.1)
    exited = server.poll()
    _stop(server)
    reason = (f"it exited with code {exited}" if exited is not None
              else f"it did not listen within {START_SECONDS:.0f} s")
    tail = output.read_text(errors="replace").strip().splitlines()[-3:]
    raise Skip(f"the stand-in did not start: {reason}" + "".join(f"\n    {t}" for t in tail))


def run(python: str, pytest_args: list[str]) -> int:
    """Run the tests against a fresh stand-in; pytest's exit code, 0 when skipped."""
    if os.environ.get("TEST_MONGODB_URI"):
        raise Skip("TEST_MONGODB_URI is set: the main test run covers the mongodb tests there")
    if not Path(python).exists():
        raise Skip(f"the stand-in is not installed ({python} is missing; see the install "
                   "step's output above)")
    with tempfile.TemporaryDirectory(prefix="mongo-standin-") as workdir:
        started = time.monotonic()
        server, port = _start(python, workdir)
        try:
            print(f"MongoDB stand-in on 127.0.0.1:{port} (started in "
                  f"{time.monotonic() - started:.1f} s)", flush=True)
            env = {**os.environ, "TEST_MONGODB_URI": f"mongodb://127.0.0.1:{port}/",
                   "TEST_MONGODB_STANDIN": "1"}
            tests = subprocess.Popen([sys.executable, "-m", "pytest", "-m", SELECTION,
                                      *pytest_args], cwd=ROOT, env=env)
            try:
                return tests.wait()
            except KeyboardInterrupt:
                _stop(tests, patience=10)  # it had the same Ctrl-C: let it report
                raise
            finally:
                _stop(tests)
        finally:
            _stop(server)


def _raise_exit(signum: int, frame: object) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the server is stopped on the way out.
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standin-python", default=str(ROOT / ".venv-mongo" / "bin" / "python"),
                        help="python of the stand-in's virtualenv (default: .venv-mongo)")
    args, pytest_args = parser.parse_known_args()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_exit)
    try:
        return run(args.standin_python, pytest_args)
    except Skip as skip:
        print(f"MongoDB stand-in run skipped: {skip}", flush=True)
        return 0
    except KeyboardInterrupt:
        print("MongoDB stand-in run interrupted; the server is stopped", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
