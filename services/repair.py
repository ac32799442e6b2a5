"""Crash repair: finish or undo what a killed process left half done.

Run explicitly (``flask gallery repair``, at start-up by ``python app.py`` and by each
gunicorn worker), never hidden in a getter.
"""

from __future__ import annotations

import typing as t

from services import bookkeeping
from services import storage
from services.storage import Store

Doc = dict[str, t.Any]


def run(store: Store, *, stale_after_seconds: float = 600.0, dry_run: bool = False) -> Doc:
    """Finish what a crashed worker left half done: pending uploads and unfinished deletes.

    An upload still ``pending`` after ``stale_after_seconds`` is not in flight any more: its
    faces and blob are removed and the persons it touched are recounted. With ``dry_run``
    the same report says what would be done, and nothing is written.
    """
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
            "image_numbers_recovered": store.fill_image_gaps(dry_run=dry_run)}


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
