"""Which process holds a claim, and whether it still runs.

Claims written to the database (a job being run, an upload being written, an image being
deleted) name their process as ``host:pid``. A process of this machine that is gone is known
at once. One of another machine is known by its heartbeat: every serving process writes
``{_id: host:pid, seen_at, started_at}`` to ``processes`` every ``BEAT_SECONDS``
(:mod:`services.upkeep`). A claim whose process neither runs here nor beats (old data, a
process that does not beat, such as ``flask gallery import`` on another machine) is only taken
as abandoned once it is ``FALLBACK_SECONDS`` old.
"""

from __future__ import annotations

import os
import socket
import typing as t
from datetime import datetime

from services import storage

if t.TYPE_CHECKING:  # pragma: no cover
    from services.storage import Store

Doc = dict[str, t.Any]

#: A serving process writes its heartbeat this often.
BEAT_SECONDS = 2.0
#: A heartbeat this old means its process is gone: seven missed beats. Only processes of other
#: machines are judged by it, and those share a MongoDB server (the embedded store is one
#: machine's), so the embedded store's long write-lock waits never make a live one look dead.
STALE_BEAT_SECONDS = 15.0
#: The age at which a claim whose process can be judged neither way is taken as abandoned;
#: longer than any upload or delete takes.
FALLBACK_SECONDS = 600.0


def claimant() -> str:
    """This process as ``host:pid``; read per call, as gunicorn workers are forks."""
    return f"{socket.gethostname()}:{os.getpid()}"


def is_local(name: str) -> bool:
    """True when ``host:pid`` names a process of this machine."""
    host, _, pid = name.rpartition(":")
    return host == socket.gethostname() and pid.isdigit()


def claimant_is_gone(name: str) -> bool:
    """True when ``host:pid`` names a process of this machine that no longer runs."""
    if not is_local(name):
        return False
    try:
        os.kill(int(name.rpartition(":")[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it runs
        return False
    return False


def owner_is_gone(name: str, claimed_at: datetime, beat: Doc | None, moment: datetime, *,
                  stale_beat_seconds: float = STALE_BEAT_SECONDS,
                  fallback_seconds: float = FALLBACK_SECONDS) -> bool:
    """True when the claim ``name`` made at ``claimed_at`` is abandoned, as of ``moment``.

    ``beat`` is the claimant's ``processes`` document, if any. A process of this machine that
    runs keeps its claims however long they take (the process table is surer than a beat a
    busy database may delay); one that is gone loses them at once. A process of another
    machine loses them when its beat is ``stale_beat_seconds`` old. A beat of a process that
    started after the claim was made is a later process given the same pid.
    """
    if name and claimant_is_gone(name):
        return True
    if beat is not None:
        if beat["started_at"] > claimed_at:
            return True
        if is_local(name):
            return False
        return (moment - beat["seen_at"]).total_seconds() > stale_beat_seconds
    return (moment - claimed_at).total_seconds() >= fallback_seconds


def claim_is_abandoned(store: Store, name: str, claimed_at: datetime, *,
                       fallback_seconds: float = FALLBACK_SECONDS) -> bool:
    """:func:`owner_is_gone` for one claim, reading its claimant's heartbeat from ``store``."""
    beat = store.process_beats([name]).get(name) if name else None
    return owner_is_gone(name, claimed_at, beat, storage.now(), fallback_seconds=fallback_seconds)
