"""Crash repair: finish or undo what a killed process left half done.

Run explicitly, never hidden in a getter: in full at start-up (``python app.py``, each gunicorn
worker, the jobs worker) and by ``flask gallery repair``; and every ``REPAIR_INTERVAL_SECONDS``
by each of those processes' upkeep thread (:mod:`services.upkeep`), which calls
:func:`background_pass`.

Half-done work is found by status (an upload still ``pending``, an image ``deleting``) and by
the upload leases a killed upload leaves behind (:meth:`Store.begin_writing`). Each names its
process, and is abandoned only once that process is gone (:func:`processes.owner_is_gone`: at
once on this machine, by its heartbeat on another, after ``stale_after_seconds`` for claims
that name no judgeable process). One repair writes at a time across processes: it holds the
``repair`` lock, and each step is also safe to repeat should a lock outlive its holder.
"""

from __future__ import annotations

import datetime as dt
import time
import typing as t

from services import blobs
from services import bookkeeping
from services import face_edits
from services import people_import
from services import processes
from services import rollback
from services import runs
from services import storage
from services.storage import Store

Doc = dict[str, t.Any]

REPAIR_LOCK = "repair"
#: A repair lock older than this was left by a killed repair and is taken over.
REPAIR_LOCK_SECONDS = 60.0
#: How long :func:`run` waits for another process's repair to finish before skipping.
WAIT_FOR_REPAIR_SECONDS = 10.0
#: Crops without a face made this recently may belong to an upload about to write its faces.
ORPHAN_CROP_MARGIN_SECONDS = 5.0
#: Heartbeats of processes silent this long are dropped (their claims were judged long ago).
#: Stored bytes nothing names are deleted once this old (BLOB_SWEEP_GRACE_SECONDS): an upload
#: writes its bytes before the documents naming them.
BLOB_GRACE_SECONDS = 3600.0
FORGET_PROCESSES_SECONDS = 86400.0


class _Abandoned(t.NamedTuple):
    uploads: list[Doc]
    leases: list[Doc]
    deletes: list[Doc]
    live_leases: list[Doc]

    def __bool__(self) -> bool:
        return bool(self.uploads or self.leases or self.deletes)


def background_pass(store: Store, *,
                    stale_after_seconds: float = processes.FALLBACK_SECONDS) -> Doc | None:
    """Undo uploads and finish deletes whose process is gone; None when there are none.

    The upkeep thread calls this every few seconds, so the common case is cheap: two reads
    of the indexed image status and one of the (few) upload leases, then the heartbeats of
    their processes. Another process's repair running already is not waited for.
    """
    moment = storage.now()
    if (not _find_abandoned(store, moment, stale_after_seconds)
            and not any(_abandoned_intents(store, moment, stale_after_seconds))):
        return None
    return run(store, stale_after_seconds=stale_after_seconds, full=False, wait_seconds=0.0)


def run(store: Store, *, dry_run: bool = False,
        stale_after_seconds: float = processes.FALLBACK_SECONDS, full: bool = True,
        wait_seconds: float = WAIT_FOR_REPAIR_SECONDS,
        blob_grace_seconds: float | None = BLOB_GRACE_SECONDS) -> Doc:
    """Finish what a killed process left half done; returns a report of ids and counts.

    An abandoned upload's faces, crops, blob and hash claim are removed and the persons it
    touched recounted; an abandoned delete is finished; a dead upload's lease is released.
    ``full`` also records the image numbers never written and removes face crops without a
    face (reads every id when there are some) and stored bytes no document names, written
    over ``blob_grace_seconds`` ago (lists every blob; None skips that). With ``dry_run``
    the same report says what would be done, and nothing is written. When another repair
    holds the lock for ``wait_seconds``, nothing is done and the report says ``skipped``.
    """
    if dry_run:
        return _repair(store, dry_run=True, full=full, stale_after_seconds=stale_after_seconds,
                       blob_grace_seconds=blob_grace_seconds)
    holder = f"{processes.claimant()}:{storage.new_id()}"
    deadline = time.monotonic() + wait_seconds
    while not store.acquire_lock(REPAIR_LOCK, holder, REPAIR_LOCK_SECONDS):
        if time.monotonic() >= deadline:
            return {**_report(False), "skipped": "another repair is running"}
        time.sleep(0.1)
    try:
        return _repair(store, dry_run=False, full=full, stale_after_seconds=stale_after_seconds,
                       blob_grace_seconds=blob_grace_seconds)
    finally:
        store.release_lock(REPAIR_LOCK, holder)


def _report(dry_run: bool) -> Doc:
    return {"dry_run": dry_run, "uploads_undone": [], "deletes_finished": [],
            "image_numbers_recovered": 0, "leases_released": [], "orphan_crops_removed": 0,
            "orphan_blobs_removed": [],
            "intents_finished": []}


def _repair(store: Store, *, dry_run: bool, full: bool, stale_after_seconds: float,
            blob_grace_seconds: float | None) -> Doc:
    report = _report(dry_run)
    # Intents first: finishing one settles its upload or delete, so the scan below does not
    # see it again.
    report["intents_finished"] = finish_intents(store, stale_after_seconds=stale_after_seconds,
                                                dry_run=dry_run)
    moment = storage.now()
    found = _find_abandoned(store, moment, stale_after_seconds)
    for image in found.uploads:
        if not dry_run:
            _undo_upload(store, image["_id"])
            store.release_hash(image.get("sha256", ""), image["_id"])
        report["uploads_undone"].append(image["_id"])
    for lease in found.leases:
        image_id = lease["_id"]
        image = store.find_image(image_id)
        if image is not None and image["status"] != "pending":
            report["leases_released"].append(image_id)  # killed once it was ready
        elif image_id not in report["uploads_undone"]:
            # Killed before its metadata was written: a blob, and crops, may be there.
            if not dry_run:
                _undo_upload(store, image_id)
            report["uploads_undone"].append(image_id)
        if not dry_run:
            store.end_writing(image_id)
    for image in found.deletes:
        if not dry_run:
            bookkeeping.remove_image(store, image["_id"])
        report["deletes_finished"].append(image["_id"])
    if full:
        report["image_numbers_recovered"] = store.fill_image_gaps(dry_run=dry_run)
        # Crops of uploads writing now were made after their lease was taken.
        oldest = min([moment, *(lease["taken_at"] for lease in found.live_leases)])
        orphans = store.orphan_crop_ids(
            oldest - dt.timedelta(seconds=ORPHAN_CROP_MARGIN_SECONDS))
        if not dry_run:
            store.delete_crops(orphans)
            store.forget_processes(moment - dt.timedelta(seconds=FORGET_PROCESSES_SECONDS))
        report["orphan_crops_removed"] = len(orphans)
        # After the crops: bytes of the crops just removed are unnamed now.
        if blob_grace_seconds is not None:
            report["orphan_blobs_removed"] = blobs.sweep(
                store, grace_seconds=blob_grace_seconds, dry_run=dry_run)
    return report


def _undo_upload(store: Store, image_id: str) -> None:
    touched = {f["person_id"] for f in store.faces_of_image(image_id)}
    bookkeeping.undo_upload(store, image_id, touched)


def _find_abandoned(store: Store, moment: dt.datetime, stale_after_seconds: float
                    ) -> _Abandoned:
    pending = store.images_with_status("pending")
    deleting = store.images_with_status("deleting")
    leases = store.upload_leases()
    names = {doc.get("claimant", "") for doc in [*pending, *deleting, *leases]} - {""}
    beats = store.process_beats(sorted(names))

    def gone(doc: Doc, claimed_at: dt.datetime) -> bool:
        name = doc.get("claimant", "")
        return processes.owner_is_gone(name, claimed_at, beats.get(name), moment,
                                       fallback_seconds=stale_after_seconds)

    dead_leases = [lease for lease in leases if gone(lease, lease["taken_at"])]
    return _Abandoned(
        uploads=[image for image in pending if gone(image, image["created_at"])],
        leases=dead_leases,
        deletes=[image for image in deleting
                 if gone(image, image.get("deleting_at") or image["created_at"])],
        live_leases=[lease for lease in leases if lease not in dead_leases])


# -- intents: operations killed between their writes ---------------------------------------

def finish_intents(store: Store, *, stale_after_seconds: float = processes.FALLBACK_SECONDS,
                   dry_run: bool = False) -> list[str]:
    """Finish or undo each journalled operation whose process is gone, then make every person
    it named agree with its faces; also finish a reset killed mid-wipe.

    An intent is abandoned by the rule claims follow (:func:`processes.owner_is_gone`, with
    ``stale_after_seconds`` for owners nothing can be judged by). Returns ``op:intent id`` of
    each one handled (``reset`` for a reset). Safe to run again if killed itself: nothing is
    removed from an intent before the persons it found are added to it.
    """
    intents, mark = _abandoned_intents(store, storage.now(), stale_after_seconds)
    handled = [f"{intent['op']}:{intent['_id']}" for intent in intents]
    if mark is not None:
        handled.append("reset")
    if not dry_run:
        for intent in intents:
            _finish(store, intent)
        for intent in intents:
            if intent["op"] == "upload" and intent.get("sha256"):
                # Issue 16: people data imported for this photo, which its upload was
                # applying (or about to) when it was killed; applied once every intent is
                # finished (an import batch's lock released). Nothing when none waits or
                # the upload was undone.
                people_import.finish_pending(store, intent["sha256"])
        if mark is not None:
            _finish_reset(store, mark)
    return handled


def _abandoned_intents(store: Store, moment: dt.datetime, stale_after_seconds: float
                       ) -> tuple[list[Doc], Doc | None]:
    """The open intents whose owner is gone, and the reset mark if its owner is gone."""
    intents = store.open_intents()
    mark = store.reset_mark()
    # The mark's holder is ``host:pid:token`` (services/catalog.py).
    mark_owner = mark["holder"].rsplit(":", 1)[0] if mark is not None else ""
    owners = {intent["owner"] for intent in intents} | {mark_owner}
    beats = store.process_beats(sorted(owners - {""})) if intents or mark else {}

    def gone(owner: str, started: dt.datetime) -> bool:
        return processes.owner_is_gone(owner, started, beats.get(owner), moment,
                                       fallback_seconds=stale_after_seconds)

    return ([intent for intent in intents if gone(intent["owner"], intent["started_at"])],
            mark if mark is not None and gone(mark_owner, mark["taken_at"]) else None)


def _finish(store: Store, intent: Doc) -> None:
    op = intent["op"]
    if op in {"recluster", "rollback"}:
        if op == "rollback":
            rollback.repair(store, int(intent.get("run", 0)))  # finished, or unstarted
        # Its moves are not logged one by one: every worker reloads (a new epoch).
        _reconcile_everyone(store)
        if op == "recluster" and intent.get("run"):
            runs.repair_run(store, int(intent["run"]))
        store.new_epoch()
        name, holder = intent.get("lock", ["", ""])
        if name and processes.claimant_is_gone(intent["owner"]):
            store.release_lock(name, holder)
        store.end_intent(intent["_id"])
        return
    face_ids = list(intent.get("faces", []))
    faces = store.faces_with_ids(face_ids)
    persons = list(dict.fromkeys([*intent.get("persons", []), *(f["person_id"] for f in faces)]))
    if len(persons) > len(intent.get("persons", [])):
        store.add_intent_persons(intent["_id"], persons)  # before anything is deleted
    for image_id in intent.get("images", []):
        image = store.find_image(image_id)
        if op == "upload":
            # Not acknowledged unless ready: undone, as an error would have undone it.
            if image is None or image.get("status") != "ready":
                bookkeeping.undo_upload(store, image_id, ())
                store.delete_faces(face_ids)  # crops written before their faces were
                store.release_hash(intent.get("sha256", ""), image_id)
            store.end_writing(image_id)
        elif op == "delete_image" and image is not None and image.get("status") == "deleting":
            bookkeeping.remove_image(store, image_id)  # hidden already: finished
            store.delete_faces(face_ids)  # a crop whose face went just before the kill
        elif op in face_edits.OPS:
            face_edits.recount_image(store, image_id)  # a face drawn or deleted by hand
    # A face is never in a person it was rejected from: a reject killed after its record
    # but before its move is undone (it was never acknowledged; a retry does it again).
    for face in store.faces_with_ids(face_ids):
        if face["person_id"] in store.rejections_of_face(face["_id"]):
            store.remove_rejection(face["_id"], face["person_id"])
    # Every worker's embedding index learns where each face is now (or that it is gone).
    where = {f["_id"]: f["person_id"] for f in store.faces_with_ids(face_ids)}
    store.log_face_changes([(face_id, where.get(face_id, "")) for face_id in face_ids])
    # Crops are written before their face and deleted after it: a named face that is gone
    # may have left its crop.
    store.delete_crops([face_id for face_id in face_ids if face_id not in where])
    for person_id in persons:
        bookkeeping.reconcile_person(store, person_id)
    if op == "import":
        # Issue 16: a batch of an import holds the re-clustering lock; its owner is dead.
        name, holder = intent.get("lock", ["", ""])
        if name:
            store.release_lock(name, holder)
    store.end_intent(intent["_id"])


def _reconcile_everyone(store: Store) -> None:
    persons = {p["_id"] for p in store.iter_persons({"_id": 1})}
    persons |= {f["person_id"] for f in store.iter_faces({}, {"person_id": 1})}
    for person_id in persons:
        bookkeeping.reconcile_person(store, person_id)


def _finish_reset(store: Store, mark: Doc) -> None:
    """Wipe again what a killed reset left, unless photos were stored since its mark expired
    (they were acknowledged): then only the persons are made to agree with the faces."""
    if store.image_created_after(mark["taken_at"]):
        _reconcile_everyone(store)
    else:
        store.reset()
    store.new_epoch()
    store.end_reset(mark["holder"])


def counts(report: Doc) -> dict[str, int]:
    """How many changes each kind of a report (lists of ids, or counts) stands for."""
    found: dict[str, int] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            found.update({f"{key}.{k}": n for k, n in counts(value).items()})
        elif isinstance(value, list):
            found[key] = len(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            found[key] = value
    return found
