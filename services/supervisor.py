"""The embedded jobs worker: one ``flask gallery worker`` process started beside the server.

``python app.py`` and the gunicorn master (``JOBS_WORKER=embedded``) each start one, so jobs
run with nothing else to start; ``JOBS_WORKER=external`` leaves workers to the operator. The
worker is a process of its own, not threads of the server: it holds the dlib models and does
CPU-bound work the web workers should not wait behind, and huey's consumer installs signal
handlers, which only a main thread may do. This module imports nothing heavy, so the gunicorn
master stays small.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
#: The command an operator would run; ``--stop-with-parent`` ends it if the server dies.
COMMAND = [sys.executable, "-m", "flask", "--app", "wsgi", "gallery", "worker",
           "--stop-with-parent"]
#: How often the supervisor looks at the worker, and the least time between two starts.
CHECK_SECONDS = 2.0
RESTART_SECONDS = 5.0


class WorkerProcess:
    """A jobs worker child process, started again if it dies, stopped with :meth:`stop`."""

    def __init__(self, *, cwd: Path = ROOT, command: list[str] | None = None) -> None:
        self.cwd = cwd
        self.command = list(command or COMMAND)
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._started_at = 0.0

    def start(self) -> None:
        """Start the worker and a thread that restarts it should it die."""
        self._spawn()
        threading.Thread(target=self._supervise, name="jobs-worker-supervisor",
                         daemon=True).start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            # A session of its own: Ctrl-C in a terminal reaches the server only, which then
            # stops the worker gracefully (SIGTERM: the current file is finished first).
            self.process = subprocess.Popen(self.command, cwd=self.cwd, start_new_session=True)
            self._started_at = time.monotonic()
            log.info("jobs worker started (pid %d)", self.process.pid)

    def _supervise(self) -> None:
        while not self._stopping.wait(CHECK_SECONDS):
            process = self.process
            # poll() is 0 when someone else reaped it (the gunicorn master reaps every child).
            if process is None or process.poll() is None:
                continue
            log.warning("jobs worker %d exited (%s); starting another", process.pid,
                        process.returncode)
            self._stopping.wait(max(0.0, RESTART_SECONDS - (time.monotonic()
                                                            - self._started_at)))
            self._spawn()

    def stop(self, timeout: float = 40.0) -> None:
        """Ask the worker to stop after its current file, then wait (killing it at the end)."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("jobs worker %d did not stop in %.0f s; killing it", process.pid,
                        timeout)
            process.kill()
            process.wait()

