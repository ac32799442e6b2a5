"""Crash repair: finish or undo what a killed process left half done.

Run explicitly (``flask gallery repair``, at start-up by ``python app.py`` and by each
gunicorn worker), never hidden in a getter.
"""

from __future__ import annotations

import typing as t

from services import bookkeeping
from services import processes
from services import storage
from services.storage import Store

Doc = dict[str, t.Any]


def run(store: Store, *, stale_after_seconds: float = 600.0, dry_run: bool = False) -> Doc:
    """Finish what a crashed worker left half done: pending uploads and unfinished deletes.

    An upload still ``pending`` after ``stale_after_seconds`` is not in flight any more: its
    faces and blob are removed and the persons it touched are recounted. With ``dry_run``
    the same report says what would be done, and nothing is written.
    """
    intents = finish_intents(store, stale_after_seconds=stale_after_seconds, dry_run=dry_run)
    moment = storage.now()
    undone, finished = [], []
    for image in store.images_with_status("pending"):
        if (moment - image["created_at"]).total_seconds() < stale_after_seconds:
            continue
        if not dry_run:
            touched = {f["person_id"] for f in store.faces_of_image(image["_id"])}
            bookkeeping.undo_upload(store, image["_id"], touched)
            store.release_hash(image.get("sha256", ""), image["_id"])
        undone.append(image["_id"])
    for image in store.images_with_status("deleting"):
        started = image.get("deleting_at") or image["created_at"]
        if (moment - started).total_seconds() < stale_after_seconds:
            continue  # another worker may be deleting it right now
        if not dry_run:
            bookkeeping.remove_image(store, image["_id"])
        finished.append(image["_id"])
    return {"dry_run": dry_run, "uploads_undone": undone, "deletes_finished": finished,
            "image_numbers_recovered": store.fill_image_gaps(dry_run=dry_run),
            "intents_finished": intents}


# -- intents: operations killed between their writes ---------------------------------------

#: An intent this old is abandoned even when its owner cannot be checked (another machine):
#: longer than the longest operation, a re-clustering (whose lock lasts 15 minutes).
INTENT_STALE_SECONDS = 900.0


def finish_intents(store: Store, *, stale_after_seconds: float = INTENT_STALE_SECONDS,
                   dry_run: bool = False) -> list[str]:
    """Finish or undo each journalled operation whose process is gone, then make every person
    it named agree with its faces; also finish a reset killed mid-wipe.

    An intent is abandoned when its owner (``host:pid``) is a process of this machine that no
    longer runs, or it is ``stale_after_seconds`` old. Returns ``op:intent id`` of each one
    handled (``reset`` for a reset). Safe to run again if killed itself: nothing is
    removed from an intent before the persons it found are added to it.
    """
    moment = storage.now()
    handled = []
    for intent in store.open_intents():
        if _abandoned(intent["owner"], intent["started_at"], moment, stale_after_seconds):
            handled.append(f"{intent['op']}:{intent['_id']}")
            if not dry_run:
                _finish(store, intent)
    mark = store.reset_mark()
    # The mark's holder is ``host:pid:token`` (services/catalog.py).
    if mark is not None and _abandoned(mark["holder"].rsplit(":", 1)[0], mark["taken_at"],
                                       moment, stale_after_seconds):
        handled.append("reset")
        if not dry_run:
            _finish_reset(store, mark)
    return handled


def _abandoned(owner: str, started: t.Any, moment: t.Any, stale_after_seconds: float) -> bool:
    return (processes.claimant_is_gone(owner)
            or (moment - started).total_seconds() >= stale_after_seconds)


def _finish(store: Store, intent: Doc) -> None:
    op = intent["op"]
    if op == "recluster":
        # Its moves are not logged one by one: every worker reloads (a new epoch).
        _reconcile_everyone(store)
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
    # Every worker's embedding index learns where each face is now (or that it is gone).
    where = {f["_id"]: f["person_id"] for f in store.faces_with_ids(face_ids)}
    store.log_face_changes([(face_id, where.get(face_id, "")) for face_id in face_ids])
    for person_id in persons:
        bookkeeping.reconcile_person(store, person_id)
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
