"""Where photo, display-copy and crop bytes live: one interface, three stores.

* ``files``  content-addressed files under ``DATA_DIR/blobs`` (``ab/cd/<sha256>``), written to
  a temporary name, fsynced, then renamed: a crash never leaves half a file under a real
  name. The default on the embedded store.
* ``gridfs`` MongoDB's GridFS layout (:class:`services.storage.GridBlobs`): the database
  holds everything and no photo meets the 16 MB document limit. The default on MongoDB.
* ``inline`` the seed's ``data:`` URI inside the blob document, for deployments that want
  exactly its schema (capped by the document limit; a third larger than the bytes).

Documents name their bytes (:meth:`Store.save_blob`); identical bytes are stored once, and
deleting a document deletes its bytes once no document names them. :func:`migrate` moves
every blob to another store, :func:`sweep` removes bytes nothing names (left by a crash).
"""

from __future__ import annotations

import hashlib
import logging
import os
import typing as t
from collections.abc import Callable
from collections.abc import Mapping
from datetime import timedelta

from errors import DocumentNotFoundError
from services import storage
from services.filestore import FileBlobs
from services.storage import Store

log = logging.getLogger(__name__)

Doc = dict[str, t.Any]

STORES = ("files", "gridfs", "inline")
#: Each blob document collection and the parts its documents hold.
_PARTS = (("image_blobs", ("original", "display")), ("face_crops", ("crop",)))


def attach(store: Store, settings: Mapping[str, t.Any]) -> None:
    """Give the store its blob stores from the settings (``BLOB_STORE``, ``DATA_DIR``).

    Every store there is is read (bytes stay readable while a migration moves them); new
    bytes go to the chosen one. On MongoDB the files store's folder is
    ``DATA_DIR/blobs/<DATABASE_NAME>``: two galleries sharing a DATA_DIR never sweep each
    other's files.
    """
    kind = settings.get("BLOB_STORE") or storage.default_blob_store(store.backend)
    if store.backend == "embedded":
        # The embedded store's own folder: a store opened on another folder (tests,
        # scripts) keeps its blobs beside its database.
        root = os.path.join(store.source[2] if store.source else settings["DATA_DIR"], "blobs")
    elif settings.get("DATA_DIR"):
        root = os.path.join(settings["DATA_DIR"], "blobs", settings["DATABASE_NAME"])
    else:
        root = ""
    store.attach_blobs(kind, FileBlobs(root) if root else None)


def sweep(store: Store, *, grace_seconds: float, dry_run: bool = False) -> list[str]:
    """Delete bytes no document names, written over ``grace_seconds`` ago; returns
    ``store:key`` of each. Reads every blob document's keys and lists every stored blob."""
    made_before = storage.now() - timedelta(seconds=grace_seconds)
    found = store.unreferenced_blobs(made_before)
    if not dry_run:
        for kind, key in found:
            store.delete_blob(kind, key)
    return [f"{kind}:{key}" for kind, key in found]


def migrate(store: Store, target: str, *, settings: Mapping[str, t.Any] | None = None,
            dry_run: bool = False, progress: Callable[[int, int], None] | None = None) -> Doc:
    """Move every blob to store ``target``, verifying each by sha256.

    Each document's bytes are copied, read back and checked, then the document is pointed at
    them, then the old bytes are deleted (when nothing else names them). Readers find the
    bytes at every moment; an interrupted run leaves each document on one side or the other,
    and running again moves the rest. With ``settings``, the stores are opened from them
    first (a command line's own settings).
    """
    if settings is not None:
        attach(store, settings)
    if target != "inline":
        store.blob_backend(target)  # an absent store is refused before any work
    todo = [(collection, doc_id, parts) for collection, parts in _PARTS
            for doc_id in store.blob_document_ids(collection, not_in=target)]
    report: Doc = {"target": target, "dry_run": dry_run, "documents": len(todo), "moved": 0,
                   "bytes": 0, "failed": []}
    for done, (collection, doc_id, parts) in enumerate(todo, start=1):
        doc = store.find_blob_document(collection, doc_id)
        if doc is not None and doc.get("store", "inline") != target:
            try:
                moved = _move(store, collection, doc, parts, target, dry_run=dry_run)
            except _MigrationError as err:
                report["failed"].append({"collection": collection, "_id": doc_id,
                                         "reason": str(err)})
            else:
                report["moved"] += 1
                report["bytes"] += moved
        if progress is not None:
            progress(done, len(todo))
    return report


class _MigrationError(Exception):
    pass


def _move(store: Store, collection: str, doc: Doc, parts: tuple[str, ...], target: str, *,
          dry_run: bool) -> int:
    fields: Doc = {}
    moved = 0
    for part in parts:
        try:
            data = store.read_blob(doc, part)
        except DocumentNotFoundError as err:
            if part == "display" and not doc.get("display_sha256") and (
                    "display_image_base64" not in doc):
                continue  # no display copy: the original is small enough to show
            raise _MigrationError(err.message) from None
        key = hashlib.sha256(data).hexdigest()
        named = doc.get(storage.blob_key_field(part))
        if named and named != key:
            raise _MigrationError(f"the {part}'s bytes do not match their sha256")
        moved += len(data)
        if dry_run:
            continue
        mime_type = doc.get("display_mime_type" if part == "display" else "mime_type",
                            "image/jpeg")
        fields.update(store.save_blob(part, data, mime_type, kind=target))
        if target != "inline":
            copied = store.blob_backend(target).get(key)
            if copied is None or hashlib.sha256(copied).hexdigest() != key:
                raise _MigrationError(f"the {part} copied to {target} does not verify")
    if dry_run:
        return moved
    if target == "inline" and moved * 4 // 3 > storage.INLINE_MAX_BYTES:
        raise _MigrationError(f"{moved * 4 // 3 // 2**20} MB as data URIs, over the "
                              f"{storage.INLINE_MAX_BYTES // 2**20} MB a document holds")
    if store.repoint_blob_document(collection, doc, fields):
        old = doc.get("store", "inline")
        for part in parts:
            key = doc.get(storage.blob_key_field(part))
            if key and old != "inline":
                store.delete_blob(old, key)
    return moved


def etag(doc: Doc, part: str, data: bytes) -> str:
    """A validator for the part's bytes: their sha256, read from the document when it has it."""
    key = doc.get(storage.blob_key_field(part)) or hashlib.sha256(data).hexdigest()
    return key[:32]
