"""Upload: a photo in, its faces detected, encoded and given persons.

One decode per upload; the bytes' sha256 finds duplicates before any decoding. Writes go in an
order that a crash or an error can only leave half done in ways that are cleaned up (here on
error, by :func:`repair.run` after a crash): an intent naming the image, its faces and the
persons it may create, the image's blob, then its metadata marked ``pending``, then new
persons, then face crops and faces, then the counters of existing persons, then ``ready``, and
last the intent is removed. Lists show ready images only.

Uploads and ``DELETE /reset`` exclude each other: an upload reads the gallery's generation
before its analysis and writes under a lease that a reset waits for; an upload that meets a
reset, or comes after one, is refused with 409 before it writes anything.
"""

from __future__ import annotations

import hashlib
import logging
import time
import typing as t
from collections.abc import Iterable
from collections.abc import Iterator
from datetime import datetime

import numpy as np

from errors import ConflictError
from errors import DatabaseConnectionError
from errors import FileSizeError
from errors import GalleryError
from services import bookkeeping
from services import clustering
from services import corrections
from services import face_edits
from services import ingest
from services import people
from services import people_import
from services import processes
from services import storage
from services.catalog import ref
from services.context import Gallery
from services.photos import clean_filename
from services.photos import resolve_filing
from services.storage import Store

log = logging.getLogger(__name__)

#: How long an upload waits for a twin upload of the same bytes to finish.
WAIT_FOR_TWIN_SECONDS = 8.0
#: How long an upload retries claiming its bytes when the claim it lost to cannot be read.
CLAIM_DEADLINE_SECONDS = 8.0

#: A hash claim older than this whose image never became ready was left by a crash, when its
#: process can be judged neither by this machine's process table nor by a heartbeat.
STALE_CLAIM_SECONDS = processes.FALLBACK_SECONDS

Doc = dict[str, t.Any]


def upload_image(gallery: Gallery, data: bytes, filename: str, *, album_id: str | None = None,
                 section_id: str | None = None) -> Doc:
    """Store a photo, find its faces and give each one a person.

    Uploading bytes already stored returns that image with ``duplicate: true``.
    :raise FileValidationError: the bytes are not a supported image.
    """
    started = time.perf_counter()
    store = gallery.store
    # Read before the analysis: a reset while it runs makes the analysis moot (its persons
    # were chosen from a gallery that is gone), so the write is then refused.
    generation = store.generation()
    album, section = resolve_filing(store, album_id, section_id)
    # Duplicates are found by the bytes' hash before any decoding.
    existing = _existing_image(store, hashlib.sha256(data).hexdigest())
    if existing is not None:
        return _duplicate_result(store, existing, started)
    options = ingest.AnalysisOptions.from_settings(gallery.settings)
    analysis = ingest.analyse_photo(data, options, gallery.engine)
    return store_analysis(gallery, analysis, filename, album=album, section=section,
                          started=started, generation=generation)


def store_analysis(gallery: Gallery, analysis: ingest.Analysis, filename: str, *, album: str,
                   section: str, started: float, generation: int,
                   suppressed: Iterable[t.Any] = ()) -> Doc:
    """Write an analysed photo: give its faces persons, then store it in the crash-safe order.

    ``album`` and ``section`` are resolved ids (``""`` for none); ``generation`` is the
    gallery's (:meth:`Store.generation`) read before the analysis started. ``suppressed``:
    boxes of false faces the user deleted from this picture; a detection overlapping one is
    not stored (:func:`face_edits.drop_suppressed`).
    :raise ConflictError: a reset runs, or ran since ``generation`` was read; nothing is
        written.
    """
    store = gallery.store
    analysis = face_edits.drop_suppressed(analysis, suppressed)
    image_id = storage.new_id()
    claimant = processes.claimant()
    # Ids chosen now so the intent names everything before it exists: each face, and the
    # person it gets if it matches nobody (unused ids are harmless to repair).
    face_ids = [storage.new_id() for _ in analysis.faces]
    new_person_ids = [storage.new_id() for _ in analysis.faces]
    # The intent comes first and goes last, so the lease, the pending image and new persons
    # are never left by a killed upload without it.
    with bookkeeping.journal(store, "upload", persons=new_person_ids, faces=face_ids,
                             images=[image_id], sha256=analysis.sha256,
                             undone_on_error=True):
        if not store.begin_writing(image_id, generation, claimant):
            raise ConflictError("The gallery is being reset or was reset while this photo "
                                "was analysed; nothing was stored: upload it again",
                                details={"reason": "reset"})
        try:
            result = _write_analysis(gallery, analysis, filename, image_id, claimant,
                                     album=album, section=section, started=started,
                                     ids=(face_ids, new_person_ids))
        finally:
            store.end_writing(image_id)
        # Issue 16 (export/import): people data imported before this photo was uploaded is
        # applied now, its faces written and assigned; inside the intent, whose sha256 lets
        # repair finish it after a kill (services/people_import.py).
        return people_import.after_upload(store, result)


def _write_analysis(gallery: Gallery, analysis: ingest.Analysis, filename: str, image_id: str,
                    claimant: str, *, album: str, section: str, started: float,
                    ids: tuple[list[str], list[str]]) -> Doc:
    store, settings = gallery.store, gallery.settings
    # Read under the lease: no reset can empty the gallery between this and the writes.
    index = gallery.sync_index()
    embeddings, _, person_ids, _ = index.snapshot()
    choices = clustering.assign_faces(
        _stack([face.encoding for face in analysis.faces]), embeddings, person_ids,
        tolerance=settings["FACE_RECOGNITION_TOLERANCE"],
        forbidden=corrections.forbidden_for_new_faces(
            store, index, [face.encoding for face in analysis.faces]))

    if store.blob_kind == "inline":
        inline = (len(analysis.stored) + len(analysis.display or b"")) * 4 // 3
        if inline > storage.INLINE_MAX_BYTES:
            raise FileSizeError(
                f"The image to store is {inline // 2**20} MB as a data URI, over the "
                f"{storage.INLINE_MAX_BYTES // 2**20} MB a database document holds; use "
                "BLOB_STORE=gridfs or files, or upload a smaller file",
                details={"stored_bytes": inline})

    sha256 = analysis.sha256
    existing = _claim_hash(store, sha256, image_id, claimant)
    if existing is not None:
        return _duplicate_result(store, existing, started)

    moment = storage.now()
    taken_at = analysis.exif.get("taken_at")
    image_doc: Doc = {
        "_id": image_id, "seq": store.next_seq("images"), "status": "pending",
        "filename": clean_filename(filename), "mime_type": analysis.mime_type,
        "sha256": sha256, "size_bytes": len(analysis.stored),
        "original_size_bytes": analysis.original_size_bytes,
        "original_format": analysis.original_format, "width": analysis.width,
        "height": analysis.height, "exif": analysis.exif, "taken_at": taken_at,
        "photo_date": taken_at if isinstance(taken_at, datetime) else moment,
        "album_id": album, "section_id": section, "face_count": len(analysis.faces),
        "created_at": moment, "updated_at": moment,
        # While pending: the process writing it, so repair undoes it once that is gone.
        "claimant": claimant,
    }
    touched: list[str] = [p for p, _ in choices if p is not None]
    try:
        store.insert_image(image_doc, _blob_document(store, image_id, analysis))
        faces = _write_faces(store, image_doc, analysis.faces, choices, touched, ids)
        store.set_image_fields(image_id, {"status": "ready"})
    except BaseException:
        log.exception("upload of %s failed; removing what was written", filename)
        bookkeeping.undo_upload(store, image_id, touched)
        store.record_image_gap(image_id, image_doc["seq"])
        store.release_hash(sha256, image_id)
        raise
    index.sync(store)
    return {
        "image_id": image_id, "filename": image_doc["filename"], "duplicate": False,
        "faces_detected": len(faces),
        "persons_created": sum(1 for face in faces if face["new_person"]),
        "faces": [{"face_id": f["face_id"], "face_location": f["location"],
                   "person_id": f["person_id"], "person_name": f["person_name"],
                   "new_person": f["new_person"], "quality_score": f["quality_score"]}
                  for f in faces],
        "width": analysis.width, "height": analysis.height, "album_id": ref(album),
        "section_id": ref(section), "processing_time": round(time.perf_counter() - started, 3),
    }


def upload_batch(gallery: Gallery, files: Iterable[tuple[str, ingest.Loader]], *,
                 album_id: str | None = None, section_id: str | None = None) -> Doc:
    """Upload each file; a file's error is reported with it, the rest go on.

    The answer counts new uploads, duplicates and failures apart (they add up to
    ``total_images``) and lists each file's result in order.
    """
    started = time.perf_counter()
    album, section = resolve_filing(gallery.store, album_id, section_id)  # fail before work
    # Names as a browser sent them: cleaned now, so a failed file is named as a stored one is.
    files = ((clean_filename(name), load) for name, load in files)
    results = list(ingest_files(gallery, files, album=album, section=section))
    summary = summarise(results)
    summary["processing_time"] = round(time.perf_counter() - started, 3)
    return summary


def ingest_files(gallery: Gallery, files: Iterable[tuple[str, ingest.Loader]], *,
                 album: str, section: str, pool: ingest.IngestPool | None = None
                 ) -> Iterator[Doc]:
    """Upload files one after another, yielding each file's result as it is written.

    ``files`` gives each file's name and a function returning its bytes, called only when the
    file's turn comes; ``album`` and ``section`` are resolved ids (``""`` for none). Photos
    are analysed in the ingest pool (``INGEST_WORKERS`` processes) and written here one at a
    time, in order, exactly as a single upload writes. Bytes already stored are answered
    from the store without being analysed. The batch API, jobs and the import command all
    come through here. ``pool`` replaces this process's pool (the import's ``--workers``).
    """
    store = gallery.store
    # One generation for the whole batch: after a reset its remaining files are refused.
    generation = store.generation()

    def known(data: bytes) -> Doc | None:
        existing = _existing_image(store, hashlib.sha256(data).hexdigest())
        return None if existing is None else _duplicate_result(store, existing,
                                                                time.perf_counter())

    options = ingest.AnalysisOptions.from_settings(gallery.settings)
    for filename, outcome, seconds in (pool or gallery.ingest_pool).analyse(
            files, options, precheck=known):
        try:
            if isinstance(outcome, GalleryError):
                raise outcome
            if isinstance(outcome, ingest.Analysis):
                outcome = store_analysis(gallery, outcome, filename, album=album,
                                         section=section, started=time.perf_counter() - seconds,
                                         generation=generation)
            yield {"filename": filename, "success": True, **outcome}
        except DatabaseConnectionError:
            raise
        except GalleryError as err:
            yield {"filename": filename, "success": False, "error": err.message,
                   "error_type": type(err).__name__, "code": err.code}


def summarise(results: list[Doc]) -> Doc:
    """Counts over per-file results: a duplicate is not a new upload, and the three counts
    (``successful_uploads``, ``duplicates``, ``failed_uploads``) add up to ``total_images``."""
    succeeded = [r for r in results if r["success"]]
    duplicates = sum(1 for r in succeeded if r["duplicate"])
    return {
        "total_images": len(results), "successful_uploads": len(succeeded) - duplicates,
        "failed_uploads": len(results) - len(succeeded), "duplicates": duplicates,
        "total_faces_detected": sum(r["faces_detected"] for r in succeeded if not r["duplicate"]),
        "persons_created": sum(r["persons_created"] for r in succeeded),
        "results": results,
    }


def _stack(vectors: list[t.Any]) -> t.Any:
    if not vectors:
        return np.empty((0, 128), dtype=np.float32)
    return np.stack(vectors).astype(np.float32)


def _claim_hash(store: Store, sha256: str, image_id: str, claimant: str) -> Doc | None:
    """Claim these bytes for ``image_id``; returns the ready image holding them instead, if any.

    :raise ConflictError: the claim was refused for ``CLAIM_DEADLINE_SECONDS`` while no claim
        could be read back.
    """
    deadline = time.monotonic() + CLAIM_DEADLINE_SECONDS
    pause = 0.0
    while not store.claim_hash(sha256, image_id, claimant):
        # Same bytes: the other upload's image, once ready (or its stale claim is cleared).
        existing = _existing_image(store, sha256)
        if existing is not None:
            return existing
        # The claim we lost to is gone (its upload failed, or was stale and cleared), so the
        # next try normally wins at once. A backend that refuses the claim yet shows none, e.g.
        # a read served by a lagging replica, would spin here for ever: back off, then give up.
        if time.monotonic() + pause > deadline:
            log.warning("hash claim %s refused for %.0f s with no claim to read back",
                        sha256, CLAIM_DEADLINE_SECONDS)
            # 409 like a twin upload that outlasts WAIT_FOR_TWIN_SECONDS: to the client the
            # bytes are held by an upload it cannot see, and retrying later is the remedy. Not
            # 503: the database answers, and a batch goes on with its other files.
            raise ConflictError("The same photo could not be claimed for this upload; retry "
                                "in a moment", details={"sha256": sha256})
        time.sleep(pause)
        pause = min(max(pause * 2, 0.05), 1.0)
    return None


def _existing_image(store: Store, sha256: str) -> Doc | None:
    """The ready image holding these bytes, or None when no live upload holds them.

    An upload of the same bytes still in flight is waited for (a few seconds). A claim left by
    a crashed upload is cleared once its process is gone (:func:`processes.claim_is_abandoned`:
    at once on this machine, by its heartbeat on another, else once it is
    ``STALE_CLAIM_SECONDS`` old).
    """
    deadline = time.monotonic() + WAIT_FOR_TWIN_SECONDS
    while True:
        claim = store.hash_claim(sha256)
        if claim is None:
            return None
        image = store.find_image(claim["image_id"])
        if image is not None and image.get("status") == "ready":
            return image
        claimed_at = claim.get("claimed_at") or datetime(1970, 1, 1)
        if processes.claim_is_abandoned(store, claim.get("claimant", ""), claimed_at,
                                        fallback_seconds=STALE_CLAIM_SECONDS):
            if image is not None and image.get("status") == "pending":
                touched = {f["person_id"] for f in store.faces_of_image(image["_id"])}
                bookkeeping.undo_upload(store, image["_id"], touched)
            store.release_hash(sha256, claim["image_id"])
            return None
        if time.monotonic() > deadline:
            raise ConflictError("The same photo is being uploaded right now; retry in a moment",
                                details={"image_id": claim["image_id"]})
        time.sleep(0.2)


def _duplicate_result(store: Store, image: Doc, started: float) -> Doc:
    faces = store.faces_of_image(image["_id"])
    names = people.person_names(store, {f["person_id"] for f in faces})
    return {
        "image_id": image["_id"], "filename": image["filename"], "duplicate": True,
        "faces_detected": len(faces), "persons_created": 0,
        "faces": [{"face_id": f["_id"], "face_location": f["face_location"],
                   "person_id": f["person_id"], "person_name": names.get(f["person_id"]),
                   "new_person": False, "quality_score": f.get("quality_score")}
                  for f in faces],
        "width": image["width"], "height": image["height"],
        "album_id": ref(image["album_id"]), "section_id": ref(image["section_id"]),
        "processing_time": round(time.perf_counter() - started, 3),
    }


def _blob_document(store: Store, image_id: str, analysis: ingest.Analysis) -> Doc:
    """Store the photo's bytes (and its display copy); returns the document naming them."""
    doc: Doc = {"_id": image_id, "mime_type": analysis.mime_type,
                **store.save_blob("original", analysis.stored, analysis.mime_type)}
    if analysis.display is not None:
        doc.update(store.save_blob("display", analysis.display, analysis.display_mime_type),
                   display_mime_type=analysis.display_mime_type)
    return doc


def _write_faces(store: Store, image: Doc, found: list[ingest.AnalysedFace],
                 choices: list[tuple[str | None, float | None]], touched: list[str],
                 ids: tuple[list[str], list[str]]) -> list[Doc]:
    """Write new persons, crops and faces, then count them on existing persons.

    ``ids``: each face's id, and the id of the person it gets if it matches nobody (both
    named in the upload's intent). ``touched`` receives every person id written to, so a
    failure can be cleaned up.
    """
    if not found:
        return []
    moment = image["created_at"]
    last_seq = store.next_seq("faces", len(found))
    face_docs, crop_docs, results = [], [], []
    new_persons: list[Doc] = []
    existing: list[tuple[str, float, str]] = []
    face_ids, new_person_ids = ids
    for i, (face, (person_id, _distance)) in enumerate(zip(found, choices, strict=True)):
        face_id = face_ids[i]
        new_person = person_id is None
        if new_person:
            person = bookkeeping.new_person_doc(store, face_count=1, thumbnail_face_id=face_id,
                                                thumbnail_quality=face.quality)
            person["_id"] = new_person_ids[i]
            new_persons.append(person)
            person_id = person["_id"]
            touched.append(person_id)
        else:
            existing.append((person_id, face.quality, face_id))
        top, right, bottom, left = face.box
        location = {"top": top, "right": right, "bottom": bottom, "left": left}
        face_docs.append({
            "_id": face_id, "seq": last_seq - len(found) + 1 + i, "image_id": image["_id"],
            "image_seq": image["seq"], "person_id": person_id,
            "embedding": storage.embedding_to_bytes(face.encoding),
            "face_location": location, "quality_score": round(face.quality, 4),
            "detector_score": face.detector_score, "is_manual_assignment": False,
            "assigned_by": "auto", "assigned_via": "upload",
            "cropped_face_filename": f"face_{face_id}.jpg",
            "created_at": moment, "updated_at": moment,
        })
        # The image named: a crop its upload was killed before pairing with a face is found.
        crop_docs.append({"_id": face_id, "image_id": image["_id"], "mime_type": "image/jpeg",
                          **store.save_blob("crop", face.crop_jpeg, "image/jpeg")})
        results.append({"face_id": face_id, "location": location, "person_id": person_id,
                        "new_person": new_person, "quality_score": round(face.quality, 4)})
    store.insert_persons(new_persons)
    store.insert_faces(face_docs, crop_docs)
    for person_id, quality, face_id in existing:
        if store.adjust_person_counts(person_id, 1, 1):
            store.offer_thumbnail(person_id, face_id, quality)
        else:
            # The person was emptied and deleted since the index was read: bring it back
            # around the face that now points at it.
            bookkeeping.restore_person(store, person_id)
    names = people.person_names(store, {r["person_id"] for r in results})
    for result in results:
        result["person_name"] = names.get(result["person_id"])
    return results
