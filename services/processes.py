"""Which process holds a claim, and whether it still runs.

Claims written to the database (a job being run, an upload being written) name their process
as ``host:pid``. A process of this machine that is gone is known at once; one of another
machine is not, so callers also use the age of the claim or of its last heartbeat.
"""

from __future__ import annotations

import os
import socket


def claimant() -> str:
    """This process as ``host:pid``; read per call, as gunicorn workers are forks."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claimant_is_gone(name: str) -> bool:
    """True when ``host:pid`` names a process of this machine that no longer runs."""
    host, _, pid = name.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it runs
        return False
    return False
