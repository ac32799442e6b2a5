"""The database handle and every query the gallery makes.

This is the only module that imports pymongo, bson, tinymongo or mongomock. It runs the same
code on three backends (``docs/`` and README explain the choice, ``shared/design/embedded-store.md``
the measurements):

* ``MONGODB_URI=mongodb://...``  real MongoDB through pymongo;
* ``MONGODB_URI=mongomock://``   mongomock, in memory, for fast tests;
* ``MONGODB_URI`` empty          tinymongo 1.3.1 with its SQLite backend under ``DATA_DIR``.

Rules that keep the three identical and the embedded store fast (numbers from the design doc):
ids are 24-hex strings; single inserts go through ``insert_many([doc])``; updates and deletes
filter on ``_id`` or an indexed string field by equality; indexes are ascending; no ``None`` in
filters (unassigned references are ``""``); no big ``skip`` on large collections (images page by
their ``seq`` instead); counters are denormalised and changed with ``$inc``; blobs live in
sibling collections with the same ``_id``; embeddings are float32 bytes; datetimes are naive UTC
truncated to milliseconds; the driver gets projections and filters of its own, never a shared
dict (mongomock writes into the ones it is given). There are no transactions, so each operation
that changes persons and faces is journalled first (an *intent*, :meth:`Store.begin_intent`)
and :func:`services.repair.finish_intents` recounts what a killed one named.

Tests kill a process after a chosen write with :class:`WriteFault` (armed per store,
:meth:`Store.arm_fault`; nothing is wrapped while it is off).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import re
import threading
import typing as t
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from types import MappingProxyType

import gridfs
import gridfs.errors
import numpy as np
import pymongo
import pymongo.errors
from bson import ObjectId
from pymongo import ReturnDocument

from errors import ConfigError
from errors import DatabaseConnectionError
from errors import DocumentNotFoundError
from errors import ValidationError
from services.filestore import FileBlobs

log = logging.getLogger(__name__)

Doc = dict[str, t.Any]

#: Uploaded bytes waiting in ``job_files`` are split into documents of at most this size.
JOB_FILE_PART_BYTES = 8 * 2**20

_ID_PATTERN = re.compile(r"[0-9a-f]{24}")
#: Every collection the gallery owns; reset wipes exactly these.
COLLECTIONS = (
    "images", "image_blobs", "image_hashes", "image_gaps", "faces", "face_crops", "face_changes",
    "persons", "albums", "sections", "counters", "locks",
    "jobs", "job_files", "job_results", "upload_leases", "rejections", "not_same",
    "pending_imports",
    "cluster_runs", "cluster_run_moves", "cluster_run_persons",
)
#: MongoDB's document limit is 16 MB; the embedded stores do not enforce it, so we do: an
#: inline blob document (data URIs) stays under this.
INLINE_MAX_BYTES = 15 * 2**20
#: Where blob bytes may live (:meth:`Store.save_blob`); ``inline`` is a data URI in the
#: blob document itself.
_BLOB_STORES = ("files", "gridfs", "inline")
#: Each blob part: (its data URI field when inline, its key field otherwise).
_BLOB_FIELDS = {"original": ("original_image_base64", "sha256"),
                "display": ("display_image_base64", "display_sha256"),
                "crop": ("cropped_face_base64", "sha256")}
_BLOB_DATA_FIELDS = tuple(data for data, _ in _BLOB_FIELDS.values())
#: Counters a reset keeps: image numbers never repeat, so two images never share one and
#: paging by number stays exact across resets (the numbers before a reset are its floor).
_KEPT_COUNTERS = ("images",)
#: The ``gallery`` collection is never wiped: it holds the generation (bumped by each reset)
#: and, while a reset runs, its mark. See :meth:`Store.begin_writing`.
_GENERATION, _RESET = "generation", "reset"
#: Fields never sent back by list queries: they are large or internal. Read-only: every
#: query gets its own copy through :func:`_fields`.
_FACE_LIGHT: Mapping[str, int] = MappingProxyType({"embedding": 0})
_BLOB_KEYS: Mapping[str, int] = MappingProxyType({"store": 1, "sha256": 1, "display_sha256": 1})


class DuplicateKeyError(Exception):
    """An insert hit an existing ``_id``."""


class SimulatedCrash(BaseException):
    """The process "died" after a chosen write (:class:`WriteFault`).

    A BaseException, as a kill is not an error: no ``except Exception`` of ours handles it,
    and every write attempted after it (a ``finally``'s clean-up) raises it again."""


def new_id() -> str:
    """A fresh id in the 24-hex form the API uses."""
    return str(ObjectId())


def now() -> datetime:
    """Naive UTC truncated to milliseconds: what every backend stores and returns alike."""
    moment = datetime.now(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def id_time(doc_id: str) -> datetime:
    """When an id made by :func:`new_id` was made (to the second, naive UTC)."""
    return ObjectId(doc_id).generation_time.replace(tzinfo=None)


def check_id(value: t.Any, kind: str = "id") -> str:
    """Return ``value`` if it is a 24-hex id, else raise ``ValidationError``."""
    # fullmatch: with match, "$" would let a trailing newline through.
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value.lower()):
        raise ValidationError(f"Invalid ObjectId format for {kind}: {value!r}",
                              details={"field": kind})
    return value.lower()


def _pair_id(kind: str, first: str, second: str) -> str:
    """A 24-hex id fixed by a pair of ids, so a pair is stored once without a unique index."""
    return hashlib.sha256(f"{kind}:{first}:{second}".encode()).hexdigest()[:24]


def embedding_to_bytes(vector: np.ndarray) -> bytes:
    """A 128-d encoding as 512 little-endian float32 bytes."""
    return np.asarray(vector, dtype="<f4").tobytes()


def embedding_from_bytes(raw: t.Any) -> np.ndarray:
    # bytes() because mongomock hands back bson.Binary where the others give bytes.
    return np.frombuffer(bytes(raw), dtype="<f4")


def _fields(projection: Mapping[str, int] | None) -> dict[str, int] | None:
    """A projection of one query's own: mongomock adds ``_id`` to the dict it is given, so a
    shared constant would change what every later query sends to MongoDB."""
    return None if projection is None else dict(projection)


def _guard(method: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """Turn a lost connection into the 503 the API documents."""

    @functools.wraps(method)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return method(*args, **kwargs)
        except pymongo.errors.ConnectionFailure as err:
            log.error("database unreachable: %s", err)
            raise DatabaseConnectionError("Database connection failed",
                                          details=type(err).__name__) from err

    return wrapper


def _guard_public_methods(cls: type) -> type:
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, _guard(value))
    return cls


def open_database(uri: str, database_name: str, data_dir: str) -> tuple[t.Any, str]:
    """Open the backend ``uri`` names; returns (database, backend name)."""
    if uri.startswith("mongomock://"):
        import mongomock

        return mongomock.MongoClient()[database_name], "mongomock"
    if uri:
        return _mongo_client(uri)[database_name], "mongodb"
    import tinymongo

    os.makedirs(data_dir, exist_ok=True)
    client = tinymongo.MongoClient(tinymongo_folder=data_dir, backend="sqlite")
    return client[database_name], "embedded"


def check_uri(uri: str) -> None:
    """Raise ConfigError naming MONGODB_URI unless pymongo accepts ``uri`` (empty and
    ``mongomock://`` are always accepted). Nothing is connected or resolved."""
    if not uri or uri.startswith("mongomock://"):
        return
    try:
        _mongo_client(uri).close()
    except (pymongo.errors.PyMongoError, ValueError, TypeError) as err:
        # pymongo's reason, never the URI itself: it may hold a password.
        raise ConfigError(f"MONGODB_URI: {err}") from None


def _mongo_client(uri: str) -> pymongo.MongoClient[t.Any]:
    # connect=False: parsed now (bad forms raise here), connected on first use, after any fork.
    # A mongodb+srv:// name is resolved then too.
    pool = {"maxPoolSize": 20, "minPoolSize": 5, "maxIdleTimeMS": 30000,
            "serverSelectionTimeoutMS": 5000, "socketTimeoutMS": 20000}
    # Options written in the URI win over these defaults.
    options = {k: v for k, v in pool.items() if k.lower() not in uri.lower()}
    return pymongo.MongoClient(uri, connect=False, **options)


def open_store(uri: str, database_name: str, data_dir: str) -> Store:
    """Open a :class:`Store` on the backend ``uri`` names (see :func:`open_database`)."""
    database, backend = open_database(uri, database_name, data_dir)
    return Store(database, backend, (uri, database_name, data_dir))


@_guard_public_methods
class Store:
    """Typed queries over one database; services receive it as an argument."""

    def __init__(self, database: t.Any, backend: str,
                 source: tuple[str, str, str] | None = None) -> None:
        self.db = database
        self.backend = backend
        #: (uri, database name, data dir) it was opened from, so another process can too.
        self.source = source
        self._indexes_ready = False
        self._index_lock = threading.Lock()
        #: Where new blobs go, and the stores blobs are read from (:meth:`attach_blobs`).
        self.blob_kind = "inline"
        self._blob_backends: dict[str, BlobBackend] = {}

    # -- set-up -------------------------------------------------------------------------

    def ensure_indexes(self) -> None:
        """Create the indexes once per process; idempotent on every backend."""
        with self._index_lock:
            if self._indexes_ready:
                return
            db = self.db
            if self.backend == "mongodb":
                # The seed's indexes as written; MongoDB holds descending and text keys.
                db.images.create_index([("album_id", 1), ("created_at", -1)])
                db.images.create_index([("section_id", 1), ("created_at", -1)])
                db.faces.create_index([("person_id", 1), ("created_at", -1)])
                db.persons.create_index([("name", "text")])
            if self.backend == "mongomock":
                # GridFS's own indexes, as pymongo's GridFSBucket makes them on MongoDB.
                db["blobs.files"].create_index([("filename", 1), ("uploadDate", 1)])
                db["blobs.chunks"].create_index([("files_id", 1), ("n", 1)], unique=True)
            else:
                # Nearest equivalents the embedded store holds: ascending keys, and a
                # lower-cased name copy searched by prefix instead of a text index.
                db.images.create_index([("album_id", 1), ("created_at", 1)])
                db.images.create_index([("section_id", 1), ("created_at", 1)])
                db.faces.create_index([("person_id", 1), ("created_at", 1)])
            for field in ("album_id", "section_id", "seq", "status", "photo_date", "face_count"):
                db.images.create_index(field)
            for field in ("person_id", "image_id", "seq", "is_manual_assignment"):
                db.faces.create_index(field)
            db.face_changes.create_index("seq")
            db.face_crops.create_index("image_id")
            db.face_crops.create_index("sha256")
            db.image_blobs.create_index("sha256")
            db.image_blobs.create_index("display_sha256")
            db.image_gaps.create_index("seq")
            db.persons.create_index("name_lc")
            db.sections.create_index("album_id")
            db.jobs.create_index("status")
            db.job_files.create_index("job_id")
            db.job_results.create_index("job_id")
            db.rejections.create_index("face_id")
            db.rejections.create_index("person_id")
            db.not_same.create_index("a")
            db.not_same.create_index("b")
            db.cluster_runs.create_index("number")
            db.cluster_run_moves.create_index("run")
            db.cluster_run_persons.create_index("run")
            if self.backend == "embedded":
                self._warm_up()
            self._indexes_ready = True

    def _warm_up(self) -> None:
        # The embedded store builds the keys of a date index on its first read, holding the
        # write lock (seconds at 100k documents): pay that at start-up, not in a request.
        early, late = datetime(1, 1, 2), datetime(9999, 12, 30)
        self.db.images.find_one({"photo_date": {"$gte": early, "$lte": late}})
        self.db.images.find_one({"album_id": "", "created_at": {"$gte": early, "$lte": late}})
        self.db.faces.find_one({"person_id": "", "created_at": {"$gte": early, "$lte": late}})

    def close(self) -> None:
        # tinymongo turns unknown attributes into collections: its client is ``_client``.
        client = (vars(self.db).get("_client") if self.backend == "embedded"
                  else getattr(self.db, "client", None))
        if client is not None and callable(getattr(client, "close", None)):
            client.close()

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            self.db.command("ping")
            return True
        except Exception:  # noqa: BLE001 - health reports any failure as "unreachable"
            return False

    # -- generic helpers ----------------------------------------------------------------

    def _insert(self, collection: str, docs: Doc | list[Doc]) -> None:
        docs = [docs] if isinstance(docs, dict) else docs
        if not docs:
            return
        try:
            # insert_many([doc]), not insert_one: tinymongo's insert_one decodes the collection.
            self.db[collection].insert_many(docs, ordered=True)
        except pymongo.errors.BulkWriteError as err:
            codes = {e.get("code") for e in err.details.get("writeErrors", [])}
            if 11000 in codes:
                raise DuplicateKeyError(str(err)) from err
            raise
        except pymongo.errors.DuplicateKeyError as err:
            raise DuplicateKeyError(str(err)) from err

    def _get(self, collection: str, doc_id: str, kind: str,
             projection: Mapping[str, int] | None = None) -> Doc:
        doc = self.db[collection].find_one({"_id": check_id(doc_id, f"{kind.lower()}_id")},
                                          _fields(projection))
        if doc is None:
            raise DocumentNotFoundError.for_id(kind, doc_id)
        return doc

    def next_seq(self, name: str, count: int = 1) -> int:
        """Reserve ``count`` numbers of counter ``name``; returns the last one."""
        doc = self.db.counters.find_one_and_update(
            {"_id": name}, {"$inc": {"v": count}}, upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int(doc["v"])

    def counter(self, name: str) -> int:
        doc = self.db.counters.find_one({"_id": name})
        return int(doc["v"]) if doc else 0

    # -- albums and sections ------------------------------------------------------------

    def insert_album(self, doc: Doc) -> None:
        self._insert("albums", doc)

    def get_album(self, album_id: str) -> Doc:
        return self._get("albums", album_id, "Album")

    def find_album(self, album_id: str) -> Doc | None:
        return self.db.albums.find_one({"_id": album_id})

    def list_albums(self) -> list[Doc]:
        return list(self.db.albums.find({}).sort([("created_at", -1), ("_id", -1)]))

    def update_album(self, album_id: str, fields: Doc) -> Doc:
        return self._update_returning("albums", album_id, "Album", fields)

    def delete_album(self, album_id: str) -> int:
        """Detach images and sections, then delete; returns how many images were unassigned."""
        unassigned = self.db.images.update_many(
            {"album_id": album_id}, {"$set": {"album_id": "", "updated_at": now()}}
        ).modified_count
        self.db.sections.update_many({"album_id": album_id}, {"$set": {"album_id": ""}})
        self.db.albums.delete_one({"_id": album_id})
        return unassigned

    def insert_section(self, doc: Doc) -> None:
        self._insert("sections", doc)

    def get_section(self, section_id: str) -> Doc:
        return self._get("sections", section_id, "Section")

    def find_section(self, section_id: str) -> Doc | None:
        return self.db.sections.find_one({"_id": section_id})

    def list_sections(self, album_id: str | None = None) -> list[Doc]:
        query = {} if album_id is None else {"album_id": album_id}
        return list(self.db.sections.find(query).sort([("created_at", -1), ("_id", -1)]))

    def update_section(self, section_id: str, fields: Doc) -> Doc:
        return self._update_returning("sections", section_id, "Section", fields)

    def refile_section_images(self, section_id: str, album_id: str) -> int:
        """Put a section's images in the album the section moved to."""
        return self.db.images.update_many(
            {"section_id": section_id},
            {"$set": {"album_id": album_id, "updated_at": now()}}).modified_count

    def delete_section(self, section_id: str) -> int:
        unassigned = self.db.images.update_many(
            {"section_id": section_id}, {"$set": {"section_id": "", "updated_at": now()}}
        ).modified_count
        self.db.sections.delete_one({"_id": section_id})
        return unassigned

    def _update_returning(self, collection: str, doc_id: str, kind: str, fields: Doc) -> Doc:
        doc_id = check_id(doc_id, f"{kind.lower()}_id")
        doc = self.db[collection].find_one_and_update(
            {"_id": doc_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
        )
        if doc is None:
            raise DocumentNotFoundError.for_id(kind, doc_id)
        return doc

    def count_images_in(self, field: str, value: str) -> int:
        return self.db.images.count_documents({field: value})

    # -- images -------------------------------------------------------------------------

    def claim_hash(self, sha256: str, image_id: str, claimant: str) -> bool:
        """Record ``sha256`` for ``image_id``; False when another image holds it already.

        ``claimant`` names the process (``host:pid``) so a claim left by a dead process can be
        told from one still being written."""
        try:
            self._insert("image_hashes", {"_id": sha256, "image_id": image_id,
                                          "claimed_at": now(), "claimant": claimant})
            return True
        except DuplicateKeyError:
            return False

    def hash_claim(self, sha256: str) -> Doc | None:
        """``{image_id, claimed_at}`` of the image holding these bytes, if any."""
        return self.db.image_hashes.find_one({"_id": sha256})

    def release_hash(self, sha256: str, image_id: str) -> None:
        # An _id-only filter: {"_id", "image_id"} makes the embedded store scan every hash.
        doc = self.db.image_hashes.find_one({"_id": sha256})
        if doc is not None and doc.get("image_id") == image_id:
            self.db.image_hashes.delete_one({"_id": sha256})

    def insert_image(self, doc: Doc, blob: Doc) -> None:
        """Blob first, then metadata: a crash leaves at worst an orphan blob for repair."""
        self._insert("image_blobs", blob)
        self._insert("images", doc)

    def set_image_fields(self, image_id: str, fields: Doc) -> None:
        self.db.images.update_one({"_id": image_id}, {"$set": fields})

    def get_image(self, image_id: str, *, ready_only: bool = True) -> Doc:
        doc = self._get("images", image_id, "Image")
        if ready_only and doc.get("status") != "ready":
            raise DocumentNotFoundError.for_id("Image", image_id)
        return doc

    def find_image(self, image_id: str) -> Doc | None:
        return self.db.images.find_one({"_id": image_id})

    def delete_image_blob(self, image_id: str) -> None:
        doc = self.db.image_blobs.find_one_and_delete({"_id": image_id}, _fields(_BLOB_KEYS))
        self._release_blobs([doc] if doc else [])

    def get_image_blob(self, image_id: str) -> Doc:
        return self._get("image_blobs", image_id, "Image")

    def images_page(self, query: Doc, limit: int, offset: int) -> tuple[list[Doc], int]:
        """Ready images matching ``query`` (indexed equality), newest first."""
        query = {**query, "status": "ready"}
        total = self.db.images.count_documents(query)
        cursor = (self.db.images.find(query).sort([("seq", -1)]).skip(offset).limit(limit))
        return list(cursor), total

    def images_newest(self, limit: int, offset: int) -> tuple[list[Doc], int]:
        """All ready images newest first, paged by ``seq`` windows instead of ``skip``.

        ``seq`` numbers images in upload order. Only deleted or failed uploads leave holes,
        and each hole is recorded in ``image_gaps`` (a small collection), so the seq at which
        offset ``k`` starts can be computed without reading the images above it. Numbers
        at or below :meth:`seq_floor` were given before the last reset and are not looked at.
        """
        images = self.db.images
        top, floor = self.counter("images"), self.seq_floor()
        total = self.count_ready_images()
        if offset >= total or limit <= 0:
            return [], total
        # Find s such that the number of ready seqs in (s, top] equals offset. Numbers not
        # ready are recorded gaps, or images in flight (pending uploads, deletes under way):
        # few, and found by their indexed status.
        start = top - offset
        for _ in range(64):
            window = {"$gt": start, "$lte": top}
            gaps = self.db.image_gaps.count_documents({"seq": window}) + sum(
                self.db.images.count_documents({"status": status, "seq": window})
                for status in ("pending", "deleting"))
            candidate = top - offset - gaps
            if candidate == start:
                break
            start = candidate
        page: list[Doc] = []
        width = limit * 2 + 16
        high = start
        while len(page) < limit and high > floor:
            low = max(floor, high - width)
            window = images.find({"seq": {"$gt": low, "$lte": high}}).sort([("seq", -1)])
            page.extend(doc for doc in window if doc.get("status") == "ready")
            high = low
            width *= 2
        return page[:limit], total

    def record_image_gap(self, image_id: str, seq: int) -> None:
        try:
            self._insert("image_gaps", {"_id": image_id, "seq": seq})
        except DuplicateKeyError:
            pass

    def fill_image_gaps(self, *, in_flight: int = 100, dry_run: bool = False) -> int:
        """Record as gaps the seq numbers no image holds (an upload killed between reserving
        its number and writing the image); returns how many were found.

        Cheap when nothing is missing (two counts); the newest ``in_flight`` numbers are left
        alone, as uploads may still be writing them. Only numbers above :meth:`seq_floor`
        count. ``dry_run`` counts them without recording anything.
        """
        top, floor = self.counter("images"), self.seq_floor()
        def above() -> Doc:  # a filter of each query's own (see the module docstring)
            return {"seq": {"$gt": floor}}

        known = (self.db.images.count_documents(above())
                 + self.db.image_gaps.count_documents(above()))
        if known >= top - floor:
            return 0
        used = {d.get("seq") for d in self.db.images.find(above(), {"seq": 1})}
        used |= {d.get("seq") for d in self.db.image_gaps.find(above(), {"seq": 1})}
        missing = [n for n in range(floor + 1, top - in_flight + 1) if n not in used]
        if not dry_run:
            for number in missing:
                self.record_image_gap(f"seq:{number}", number)
        return len(missing)

    def delete_image_docs(self, image: Doc) -> None:
        """Remove an image's blob, hash, and metadata (its faces must be gone already).

        Its number becomes a gap after the image is gone: paging counts a ``deleting`` image
        as not ready already, and a crash in between leaves a number :meth:`fill_image_gaps`
        finds."""
        self.delete_image_blob(image["_id"])
        if image.get("sha256"):
            self.release_hash(image["sha256"], image["_id"])
        self.db.images.delete_one({"_id": image["_id"]})
        self.record_image_gap(image["_id"], int(image.get("seq", 0)))

    def images_with_status(self, status: str) -> list[Doc]:
        return list(self.db.images.find({"status": status}))

    # -- faces --------------------------------------------------------------------------

    def insert_faces(self, faces: list[Doc], crops: list[Doc]) -> None:
        """Crops first, then faces: a face never points at a missing crop."""
        self._insert("face_crops", crops)
        self._insert("faces", faces)

    def get_face(self, face_id: str, *, with_embedding: bool = False) -> Doc:
        return self._get("faces", face_id, "Face", None if with_embedding else _FACE_LIGHT)

    def get_face_crop(self, face_id: str) -> Doc:
        return self._get("face_crops", face_id, "Face")

    def faces_of_image(self, image_id: str, *, with_embedding: bool = False) -> list[Doc]:
        cursor = self.db.faces.find({"image_id": image_id},
                                    None if with_embedding else _fields(_FACE_LIGHT))
        return sorted(cursor, key=lambda f: (f["face_location"]["left"], f["_id"]))

    def faces_of_images(self, image_ids: list[str]) -> dict[str, list[Doc]]:
        """Faces of several images in one indexed query, each list left to right."""
        found: dict[str, list[Doc]] = {image_id: [] for image_id in image_ids}
        if image_ids:
            for face in self.db.faces.find({"image_id": {"$in": image_ids}},
                                           _fields(_FACE_LIGHT)):
                found.setdefault(face["image_id"], []).append(face)
        for faces in found.values():
            faces.sort(key=lambda f: (f["face_location"]["left"], f["_id"]))
        return found

    def faces_of_person(self, person_id: str, *, with_embedding: bool = False,
                        projection: Mapping[str, int] | None = None) -> list[Doc]:
        if projection is None:
            projection = None if with_embedding else _FACE_LIGHT
        cursor = self.db.faces.find({"person_id": person_id}, _fields(projection))
        return sorted(cursor, key=lambda f: (f.get("image_seq", 0), f["_id"]), reverse=True)

    def count_faces_of_person(self, person_id: str) -> int:
        return self.db.faces.count_documents({"person_id": person_id})

    def set_face_person(self, face_id: str, person_id: str, *, manual: bool, via: str = "",
                        run: int = 0) -> None:
        """Point a face at a person (the source of truth for membership) and say who did."""
        fields = {"person_id": person_id, "is_manual_assignment": manual,
                  "assigned_by": "manual" if manual else "auto",
                  "assigned_via": via or ("move" if manual else "upload"), "updated_at": now()}
        self.db.faces.update_one({"_id": face_id}, _assignment(fields, run))

    def move_all_faces(self, source_person_id: str, target_person_id: str, *,
                       via: str = "merge", run: int = 0) -> int:
        """Point every face of one person at another (re-clustering merges); ``via`` and
        ``run`` say how, as :meth:`set_face_person`'s do."""
        fields: Doc = {"person_id": target_person_id, "assigned_via": via, "updated_at": now()}
        return self.db.faces.update_many({"person_id": source_person_id},
                                         _assignment(fields, run)).modified_count

    def delete_faces(self, face_ids: Iterable[str]) -> list[Doc]:
        """Delete faces and their crops; returns the faces this call deleted (each face is
        returned to one caller only, so two deletes never both count it)."""
        deleted = []
        for face_id in face_ids:
            # The face's corrections go first: a kill in between leaves a face without them,
            # never a correction naming a face that is gone. Looked up first, so a gallery
            # without corrections makes the writes it always made.
            if self.db.rejections.find_one({"face_id": face_id}) is not None:
                self.db.rejections.delete_many({"face_id": face_id})
            face = self.db.faces.find_one_and_delete({"_id": face_id})
            self.delete_crops([face_id])
            if face is not None:
                deleted.append(face)
        return deleted

    def delete_crops_of_image(self, image_id: str) -> int:
        """Delete the crops written for an image's faces, with or without their faces (an
        upload killed between the two leaves crops alone). Crops written before crops named
        their image are found by :meth:`orphan_crop_ids`."""
        crops = list(self.db.face_crops.find({"image_id": image_id}, _fields(_BLOB_KEYS)))
        removed = self.db.face_crops.delete_many({"image_id": image_id}).deleted_count
        self._release_blobs(crops)
        return removed

    def orphan_crop_ids(self, made_before: datetime) -> list[str]:
        """Ids of crops without a face whose ids were made before ``made_before`` (newer ones
        may belong to an upload writing its faces now).

        Cheap when there is none: two counts. Otherwise every crop and face id is read."""
        if self.db.face_crops.count_documents({}) <= self.db.faces.count_documents({}):
            return []
        faces = {d["_id"] for d in self.db.faces.find({}, {"_id": 1})}
        return [d["_id"] for d in self.db.face_crops.find({}, {"_id": 1})
                if d["_id"] not in faces and _ID_PATTERN.fullmatch(d["_id"])
                and id_time(d["_id"]) < made_before]

    def delete_crops(self, face_ids: Iterable[str]) -> None:
        for face_id in face_ids:
            crop = self.db.face_crops.find_one_and_delete({"_id": face_id}, _fields(_BLOB_KEYS))
            self._release_blobs([crop] if crop else [])

    def reassign_face(self, face_id: str, person_id: str, *, via: str = "move") -> Doc | None:
        """Point a face at a person by hand (``via`` "move" or "merge"), atomically; returns
        the face as it was before (None if it is gone), so the caller adjusts the person it
        really left."""
        return self.db.faces.find_one_and_update(
            {"_id": face_id},
            _assignment({"person_id": person_id, "is_manual_assignment": True,
                         "assigned_by": "manual", "assigned_via": via, "updated_at": now()}),
            return_document=ReturnDocument.BEFORE)

    def confirm_face(self, face_id: str) -> Doc | None:
        """Mark a face's assignment manual where it is, atomically; returns the face as it was
        before (None if it is gone). The person is not in the filter: a face moved meanwhile is
        confirmed in the person it is in now, and the caller counts it there."""
        return self.db.faces.find_one_and_update(
            {"_id": face_id},
            _assignment({"is_manual_assignment": True, "assigned_by": "manual",
                         "assigned_via": "confirm", "updated_at": now()}),
            return_document=ReturnDocument.BEFORE)

    def start_image_delete(self, image_id: str, claimant: str) -> Doc | None:
        """Mark an image ``deleting`` by ``claimant`` (``host:pid``), atomically; returns it as
        it was before (None if gone).

        Only the caller that saw it ``ready`` goes on to delete it; repair finishes the delete
        once its claimant is gone."""
        return self.db.images.find_one_and_update(
            {"_id": image_id},
            {"$set": {"status": "deleting", "deleting_at": now(), "claimant": claimant}},
            return_document=ReturnDocument.BEFORE)

    def iter_faces(self, query: Doc, projection: Mapping[str, int]) -> Iterator[Doc]:
        return iter(self.db.faces.find(dict(query), _fields(projection)))

    def faces_in_seq_range(self, low: int, high: int, projection: Mapping[str, int]
                           ) -> list[Doc]:
        return list(self.db.faces.find({"seq": {"$gt": low, "$lte": high}},
                                       _fields(projection)))

    def faces_with_seqs(self, seqs: list[int], projection: Mapping[str, int]) -> list[Doc]:
        return list(self.db.faces.find({"seq": {"$in": seqs}}, _fields(projection)))

    # -- faces drawn and deleted by hand (services/face_edits.py) -----------------------

    def adjust_image_face_count(self, image_id: str, delta: int) -> None:
        """Change an image's ``face_count`` by ``delta`` (``$inc``: two edits never lose one)."""
        self.db.images.update_one({"_id": image_id}, {"$inc": {"face_count": delta},
                                                      "$set": {"updated_at": now()}})

    def suppress_box(self, image_id: str, box: Doc) -> None:
        """Remember a box the user said holds no face (``suppressed_boxes`` of the image)."""
        self.db.images.update_one({"_id": image_id}, {"$push": {"suppressed_boxes": dict(box)}})

    # -- change log (keeps every worker's embedding index current) ----------------------

    def log_face_changes(self, changes: list[tuple[str, str]]) -> None:
        """Append (face_id, person_id or "" for deleted) entries to the change log."""
        if not changes:
            return
        last = self.next_seq("face_changes", len(changes))
        first = last - len(changes) + 1
        self._insert("face_changes", [
            {"_id": new_id(), "seq": first + i, "face_id": face_id, "person_id": person_id}
            for i, (face_id, person_id) in enumerate(changes)
        ])

    def face_changes_since(self, after: int, until: int) -> list[Doc]:
        docs = self.db.face_changes.find({"seq": {"$gt": after, "$lte": until}})
        return sorted(docs, key=lambda d: d["seq"])

    def face_changes_with_seqs(self, seqs: list[int]) -> list[Doc]:
        return list(self.db.face_changes.find({"seq": {"$in": seqs}}))

    # -- processes' heartbeats (services/processes.py, services/upkeep.py) --------------
    # Not a gallery collection: a reset leaves it, as the processes go on running.

    def beat(self, name: str, started_at: datetime) -> None:
        """Record that process ``name`` (``host:pid``, started at ``started_at``) runs now."""
        self.db.processes.update_one({"_id": name}, {"$set": {
            "seen_at": now(), "started_at": started_at}}, upsert=True)

    def process_beats(self, names: list[str]) -> dict[str, Doc]:
        """``{seen_at, started_at}`` of each named process that has beaten, by name."""
        if not names:
            return {}
        return {d["_id"]: d for d in self.db.processes.find({"_id": {"$in": list(names)}})}

    def forget_processes(self, seen_before: datetime) -> int:
        """Drop the heartbeats of processes silent since ``seen_before``; returns how many.
        The collection holds one document a process start, so it stays small."""
        stale = [d["_id"] for d in self.db.processes.find({})
                 if d["seen_at"] < seen_before]
        for name in stale:
            self.db.processes.delete_one({"_id": name})
        return len(stale)

    # -- persons ------------------------------------------------------------------------

    def insert_persons(self, docs: list[Doc]) -> None:
        self._insert("persons", docs)

    def get_person(self, person_id: str) -> Doc:
        return self._get("persons", person_id, "Person")

    def find_person(self, person_id: str) -> Doc | None:
        return self.db.persons.find_one({"_id": person_id})

    def set_person_fields(self, person_id: str, fields: Doc) -> Doc:
        """Set fields; returns the document as it was before."""
        person_id = check_id(person_id, "person_id")
        doc = self.db.persons.find_one_and_update(
            {"_id": person_id}, {"$set": fields}, return_document=ReturnDocument.BEFORE
        )
        if doc is None:
            raise DocumentNotFoundError.for_id("Person", person_id)
        return doc

    def adjust_person_counts(self, person_id: str, faces: int, images: int,
                             manual: int = 0) -> bool:
        """Change a person's counters; False when the person no longer exists."""
        return self.db.persons.update_one({"_id": person_id}, {"$inc": {
            "face_count": faces, "image_count": images, "manual_face_count": manual,
        }, "$set": {"updated_at": now()}}).matched_count > 0

    def offer_thumbnail(self, person_id: str, face_id: str, quality: float) -> None:
        """Make ``face_id`` the person's thumbnail if it beats the current one.

        Filters hold ``_id`` alone: with any other key the embedded store reads every person
        (110 ms at 3.6k). ``$max`` changes the document only when ``quality`` is higher.
        """
        persons = self.db.persons
        raised = persons.update_one({"_id": person_id},
                                    {"$max": {"thumbnail_quality": quality}}).modified_count
        if raised:
            persons.update_one({"_id": person_id}, {"$set": {"thumbnail_face_id": face_id}})

    def delete_person(self, person_id: str) -> None:
        """Delete a person and, first, the corrections naming it (ids are never reused, so
        they could never apply again)."""
        if self.db.rejections.find_one({"person_id": person_id}) is not None:
            self.db.rejections.delete_many({"person_id": person_id})
        for side in ("a", "b"):
            if self.db.not_same.find_one({side: person_id}) is not None:
                self.db.not_same.delete_many({side: person_id})
        self.db.persons.delete_one({"_id": person_id})

    def persons_page(self, *, name_prefix: str, sort: str, descending: bool, limit: int,
                     offset: int, include_hidden: bool = True,
                     favorite_only: bool = False) -> tuple[list[Doc], int]:
        persons = self.db.persons
        query: Doc = {}
        if name_prefix:
            query = {"name_lc": {"$regex": "^" + re.escape(name_prefix.lower())}}
        query.update(_person_flags(include_hidden, favorite_only))
        total = persons.count_documents(query)
        direction = -1 if descending else 1
        field = {"name": "name_lc"}.get(sort, sort)
        cursor = persons.find(query).sort([(field, direction), ("_id", direction)])
        return list(cursor.skip(offset).limit(limit)), total

    def iter_persons(self, projection: Mapping[str, int] | None = None) -> Iterator[Doc]:
        return iter(self.db.persons.find({}, _fields(projection)))

    # -- corrections: "not this person" and "not the same people" ---------------------------

    def add_rejection(self, face_id: str, person_id: str) -> bool:
        """Remember that a face is not this person; False if it was already remembered."""
        # One id per pair makes the record idempotent on every backend (no unique index).
        try:
            self._insert("rejections", {"_id": _pair_id("r", face_id, person_id),
                                        "face_id": face_id, "person_id": person_id,
                                        "created_at": now()})
        except DuplicateKeyError:
            return False
        return True

    def remove_rejection(self, face_id: str, person_id: str) -> bool:
        return self.db.rejections.delete_one(
            {"_id": _pair_id("r", face_id, person_id)}).deleted_count > 0

    def rejections_of_face(self, face_id: str) -> list[str]:
        """The persons a face was rejected from."""
        return [r["person_id"] for r in self.db.rejections.find({"face_id": face_id})]

    def rejections_from_person(self, person_id: str) -> list[str]:
        """The faces rejected from a person."""
        return [r["face_id"] for r in self.db.rejections.find({"person_id": person_id})]

    def all_rejections(self) -> list[tuple[str, str]]:
        """Every (face, person) pair rejected."""
        return [(r["face_id"], r["person_id"]) for r in self.db.rejections.find({})]

    def add_not_same(self, person_id: str, other_id: str) -> bool:
        """Remember that two persons are different people; False if already remembered."""
        a, b = sorted((person_id, other_id))
        try:
            self._insert("not_same", {"_id": _pair_id("n", a, b), "a": a, "b": b,
                                      "created_at": now()})
        except DuplicateKeyError:
            return False
        return True

    def remove_not_same(self, person_id: str, other_id: str) -> bool:
        a, b = sorted((person_id, other_id))
        return self.db.not_same.delete_one({"_id": _pair_id("n", a, b)}).deleted_count > 0

    def not_same_of(self, person_id: str) -> list[str]:
        """The persons recorded as different people from this one, sorted."""
        others = [d["b"] for d in self.db.not_same.find({"a": person_id})]
        others += [d["a"] for d in self.db.not_same.find({"b": person_id})]
        return sorted(others)

    def all_not_same(self) -> list[tuple[str, str]]:
        return [(d["a"], d["b"]) for d in self.db.not_same.find({})]

    # -- export and import of the people data (issue 16: services/exchange.py,
    #    services/people_import.py) ---------------------------------------------------------

    def iter_ready_images(self, projection: Mapping[str, int]) -> Iterator[Doc]:
        """Every ready image, with the fields ``projection`` names (and ``status``)."""
        fields = {**projection, "status": 1}
        return (doc for doc in self.db.images.find({}, _fields(fields))
                if doc.get("status") == "ready")

    def image_with_hash(self, sha256: str) -> Doc | None:
        """The ready image holding these bytes, if any (its hash claim, then the image)."""
        claim = self.db.image_hashes.find_one({"_id": sha256})
        if claim is None:
            return None
        image = self.db.images.find_one({"_id": claim["image_id"]})
        return image if image is not None and image.get("status") == "ready" else None

    def import_face(self, face_id: str, person_id: str) -> Doc | None:
        """Point a face at a person as an imported user decision (manual, ``assigned_via``
        "import"), atomically; returns the face as it was before (None if it is gone)."""
        return self.db.faces.find_one_and_update(
            {"_id": face_id},
            {"$set": {"person_id": person_id, "is_manual_assignment": True,
                      "assigned_by": "manual", "assigned_via": "import",
                      "updated_at": now()},
             "$unset": {"assigned_run": ""}},
            projection=_fields(_FACE_LIGHT), return_document=ReturnDocument.BEFORE)

    def pending_import(self, sha256: str) -> Doc | None:
        """People data imported for photos not uploaded yet, kept under their sha256."""
        return self.db.pending_imports.find_one({"_id": sha256})

    def put_pending_import(self, doc: Doc) -> None:
        """Store (or replace) the pending people data of one photo (``_id``: its sha256)."""
        self.db.pending_imports.replace_one({"_id": doc["_id"]}, dict(doc), upsert=True)

    def delete_pending_import(self, sha256: str) -> bool:
        return self.db.pending_imports.delete_one({"_id": sha256}).deleted_count > 0

    def pending_import_ids(self) -> list[str]:
        return [d["_id"] for d in self.db.pending_imports.find({}, {"_id": 1})]

    # -- locks --------------------------------------------------------------------------

    def acquire_lock(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take a named lock; a lock older than its ttl (a crashed holder) is taken over."""
        return self._claim("locks", name, holder, ttl_seconds)

    def _claim(self, collection: str, name: str, holder: str, ttl_seconds: float) -> bool:
        # An insert on a unique _id: the one write every backend makes atomic.
        moment = now()
        try:
            self._insert(collection, {"_id": name, "holder": holder, "taken_at": moment,
                                      "ttl": ttl_seconds})
            return True
        except DuplicateKeyError:
            doc = self.db[collection].find_one({"_id": name})
            if doc and (moment - doc["taken_at"]).total_seconds() > doc.get("ttl", 0):
                self.db[collection].delete_one({"_id": name, "holder": doc["holder"]})
                return self._claim(collection, name, holder, ttl_seconds)
            return False

    def release_lock(self, name: str, holder: str) -> None:
        self.db.locks.delete_one({"_id": name, "holder": holder})

    # -- jobs (services/jobs.py) ----------------------------------------------------------
    # A job document stays small (counters, params, the file names): every processed file
    # updates it, and the embedded store rewrites a whole document per update. Per-file
    # results live in ``job_results`` (``_id`` = "job:position", so a file is recorded once
    # whoever tries), the uploaded bytes in ``job_files`` until their result is recorded.

    def insert_job(self, doc: Doc) -> None:
        self._insert("jobs", doc)

    def get_job(self, job_id: str) -> Doc:
        return self._get("jobs", job_id, "Job")

    def find_job(self, job_id: str) -> Doc | None:
        return self.db.jobs.find_one({"_id": job_id})

    def update_job(self, job_id: str, fields: Doc, increments: Doc | None = None
                   ) -> Doc | None:
        """Set ``fields`` and add ``increments``, atomically; returns the job after (None if
        it is gone)."""
        change: Doc = {"$set": fields}
        if increments:
            change["$inc"] = increments
        return self.db.jobs.find_one_and_update({"_id": job_id}, change,
                                               return_document=ReturnDocument.AFTER)

    def jobs_with_status(self, status: str) -> list[Doc]:
        return list(self.db.jobs.find({"status": status}, {"files": 0}))

    def jobs_page(self, status: str | None, limit: int, offset: int) -> tuple[list[Doc], int]:
        """Jobs newest first, without their file names (jobs are few: one per batch)."""
        query = {} if status is None else {"status": status}
        total = self.db.jobs.count_documents(query)
        cursor = self.db.jobs.find(query, {"files": 0}).sort([("created_at", -1), ("_id", -1)])
        return list(cursor.skip(offset).limit(limit)), total

    def put_job_file(self, job_id: str, position: int, data: bytes) -> None:
        """Store an uploaded file's bytes in parts of ``JOB_FILE_PART_BYTES`` (a MongoDB
        document holds 16 MB; an upload may be larger)."""
        size = JOB_FILE_PART_BYTES
        parts = max(1, -(-len(data) // size))
        moment = now()
        for part in range(parts):
            self._insert("job_files", {
                "_id": f"{job_id}:{position}:{part}", "job_id": job_id, "position": position,
                "part": part, "parts": parts, "data": data[part * size:(part + 1) * size],
                "created_at": moment})

    def read_job_file(self, job_id: str, position: int) -> bytes | None:
        """A stored file's bytes, or None when they are gone."""
        first = self.db.job_files.find_one({"_id": f"{job_id}:{position}:0"})
        if first is None:
            return None
        # bytes() because mongomock hands back bson.Binary where the others give bytes.
        chunks = [bytes(first["data"])]
        for part in range(1, first["parts"]):
            doc = self.db.job_files.find_one({"_id": f"{job_id}:{position}:{part}"})
            if doc is None:
                return None
            chunks.append(bytes(doc["data"]))
        return b"".join(chunks)

    def delete_job_file(self, job_id: str, position: int) -> None:
        part = 0
        while self.db.job_files.delete_one({"_id": f"{job_id}:{position}:{part}"}).deleted_count:
            part += 1

    def delete_job_files(self, job_id: str) -> int:
        return self.db.job_files.delete_many({"job_id": job_id}).deleted_count

    def record_job_result(self, job_id: str, position: int, result: Doc) -> bool:
        """Record a file's result; False when that file's result was recorded already."""
        try:
            self._insert("job_results", {"_id": f"{job_id}:{position}", "job_id": job_id,
                                         "position": position, "result": result})
            return True
        except DuplicateKeyError:
            return False

    def job_results(self, job_id: str) -> list[Doc]:
        """``{position, result}`` of each recorded file, in file order."""
        docs = self.db.job_results.find({"job_id": job_id}, {"position": 1, "result": 1})
        return sorted(docs, key=lambda d: d["position"])

    # -- re-clustering runs and their rollback (services/runs.py) -------------------------
    # A run is one small document (``_id`` "run:N"); the faces it moved, one document each,
    # are in ``cluster_run_moves`` and the persons it deleted in ``cluster_run_persons``
    # (``_id`` "N:id", ``run`` N), so a run over 100k faces never nears MongoDB's 16 MB.

    def insert_cluster_run(self, doc: Doc) -> None:
        self._insert("cluster_runs", doc)

    def find_cluster_run(self, number: int) -> Doc | None:
        return self.db.cluster_runs.find_one({"_id": f"run:{int(number)}"})

    def update_cluster_run(self, number: int, fields: Doc) -> None:
        self.db.cluster_runs.update_one({"_id": f"run:{int(number)}"}, {"$set": fields})

    def cluster_runs_page(self, limit: int, offset: int) -> tuple[list[Doc], int]:
        """Runs newest first (they are few: one a re-clustering or rollback)."""
        total = self.db.cluster_runs.count_documents({})
        cursor = self.db.cluster_runs.find({}).sort([("number", -1)]).skip(offset).limit(limit)
        return list(cursor), total

    def latest_cluster_run(self) -> Doc | None:
        """The newest run document (a re-clustering or a rollback), None before the first."""
        return next(iter(self.db.cluster_runs.find({}).sort([("number", -1)]).limit(1)), None)

    def latest_finished_recluster(self) -> Doc | None:
        """The newest re-clustering run that finished (not a rollback, not an interrupted
        one), None before the first."""
        cursor = self.db.cluster_runs.find({"kind": "recluster", "status": "done"})
        return next(iter(cursor.sort([("number", -1)]).limit(1)), None)

    def insert_run_moves(self, number: int, moves: list[Doc], *, batch: int = 1000) -> None:
        """Record ``{face_id, from_person_id, to_person_id, from_manual}`` of each face a run
        moves, in batches (one insert a batch)."""
        docs = [{"_id": f"{number}:{m['face_id']}", "run": number, **m} for m in moves]
        for start in range(0, len(docs), batch):
            self._insert("cluster_run_moves", docs[start:start + batch])

    def run_moves(self, number: int) -> list[Doc]:
        """Every move a run recorded, by face id."""
        docs = self.db.cluster_run_moves.find({"run": int(number)})
        return sorted((_move_fields(d) for d in docs), key=lambda d: d["face_id"])

    def run_moves_page(self, number: int, limit: int, offset: int) -> tuple[list[Doc], int]:
        total = self.db.cluster_run_moves.count_documents({"run": int(number)})
        cursor = (self.db.cluster_run_moves.find({"run": int(number)})
                  .sort([("face_id", 1)]).skip(offset).limit(limit))
        return [_move_fields(d) for d in cursor], total

    def insert_run_persons(self, number: int, persons: list[Doc]) -> None:
        """Snapshot persons a run is about to delete (``person`` holds the whole document)."""
        self._insert("cluster_run_persons", [
            {"_id": f"{number}:{p['_id']}", "run": number, "person": p} for p in persons])

    def run_persons(self, number: int) -> dict[str, Doc]:
        """The persons a run snapshotted, by id."""
        return {d["person"]["_id"]: d["person"]
                for d in self.db.cluster_run_persons.find({"run": int(number)})}

    def delete_run_records(self, number: int) -> None:
        """Remove what a run recorded before its run document was written (a killed run)."""
        self.db.cluster_run_moves.delete_many({"run": int(number)})
        self.db.cluster_run_persons.delete_many({"run": int(number)})

    def faces_for_rollback(self, face_ids: list[str], *, one_by_one: int = 100
                           ) -> dict[str, Doc]:
        """``person_id``, ``image_id``, provenance and ``updated_at`` of those of ``face_ids``
        that exist, by id.

        A few are read by ``_id`` one at a time; more in one pass over every face's small
        fields: ``$in`` on ``_id`` makes the embedded store scan the whole collection for
        each query (31 s for 321 faces of 10k in two queries, against ~1 s for one pass)."""
        fields = {"person_id": 1, "image_id": 1, "is_manual_assignment": 1,
                  "assigned_via": 1, "assigned_run": 1, "updated_at": 1}
        if len(face_ids) <= one_by_one:
            found = (self.db.faces.find_one({"_id": face_id}, _fields(fields))
                     for face_id in face_ids)
            return {f["_id"]: f for f in found if f is not None}
        wanted = set(face_ids)
        return {f["_id"]: f for f in self.db.faces.find({}, _fields(fields))
                if f["_id"] in wanted}

    # -- statistics and reset -----------------------------------------------------------

    def count(self, collection: str, query: Doc | None = None) -> int:
        return self.db[collection].count_documents(dict(query or {}))

    def count_ready_images(self) -> int:
        # Equality on status would decode every image on the embedded store; the few images
        # not ready (uploads in flight, deletes half done) are cheap to count and subtract.
        not_ready = sum(self.db.images.count_documents({"status": s})
                        for s in ("pending", "deleting"))
        return max(0, self.db.images.count_documents({}) - not_ready)

    def count_images_without_faces(self) -> int:
        return self.db.images.count_documents({"face_count": 0, "status": "ready"})

    def epoch(self) -> str:
        """A token that changes when the gallery is reset (embedding indexes reload)."""
        doc = self.db.counters.find_one({"_id": "epoch"})
        return str(doc["token"]) if doc else ""

    def new_epoch(self) -> str:
        """Make every worker reload its embedding index; the change log so far is then moot."""
        logged = self.counter("face_changes")
        token = new_id()
        self.db.counters.update_one({"_id": "epoch"}, {"$set": {"token": token}}, upsert=True)
        if logged:
            self.db.face_changes.delete_many({"seq": {"$lte": logged}})
        return token

    def lock_holder(self, name: str) -> str | None:
        """Who holds a named lock; a lock older than its ttl (a crashed holder) is nobody's."""
        doc = self.db.locks.find_one({"_id": name})
        if doc is None or (now() - doc["taken_at"]).total_seconds() > doc.get("ttl", 0):
            return None
        return doc["holder"]

    def reset(self) -> dict[str, int]:
        """Delete every document of every gallery collection; returns counts removed.

        The image counter is kept and what it reached becomes the floor of image numbers, and
        the generation goes up: uploads read before this are refused
        (:meth:`begin_writing`). Only :func:`services.catalog.reset` calls this in the
        service, under its reset mark; tests call it to start empty."""
        floor = self.counter("images")
        removed = {}
        for name in COLLECTIONS:
            query = {"_id": {"$nin": list(_KEPT_COUNTERS)}} if name == "counters" else {}
            removed[name] = self.db[name].delete_many(query).deleted_count
        for backend in self._blob_backends.values():
            backend.wipe()  # the bytes the wiped blob documents named
        self.db.gallery.update_one({"_id": _GENERATION},
                                   {"$inc": {"n": 1}, "$set": {"seq_floor": floor}},
                                   upsert=True)
        return removed

    # -- generation: uploads and resets exclude each other (services/catalog.py) ---------

    def generation(self) -> int:
        """How many resets the gallery has seen; an upload reads it before its analysis."""
        doc = self.db.gallery.find_one({"_id": _GENERATION})
        return int(doc["n"]) if doc else 0

    def seq_floor(self) -> int:
        """Image numbers at or below this were given before the last reset: none is in use."""
        doc = self.db.gallery.find_one({"_id": _GENERATION})
        return int(doc.get("seq_floor", 0)) if doc else 0

    def begin_writing(self, image_id: str, generation: int, claimant: str) -> bool:
        """Take a lease for one upload's writes; False, leaving nothing, when a reset runs or
        has run since ``generation`` was read.

        The lease is written before the reset mark and generation are read, and a reset
        writes its mark before it reads the leases: whichever comes second sees the other,
        so an upload is either refused here or waited for by the reset (Dekker's order, on
        a database that answers reads with the writes it acknowledged)."""
        self._insert("upload_leases", {"_id": image_id, "claimant": claimant,
                                       "taken_at": now()})
        if self._reset_holder() is None and self.generation() == generation:
            return True
        self.end_writing(image_id)
        return False

    def end_writing(self, image_id: str) -> None:
        self.db.upload_leases.delete_one({"_id": image_id})

    def upload_leases(self) -> list[Doc]:
        """``{_id, claimant, taken_at}`` of every upload writing now (or killed while it was)."""
        return list(self.db.upload_leases.find({}))

    def begin_reset(self, holder: str, ttl_seconds: float) -> bool:
        """Mark a reset as running; False when another one is (a mark older than its ttl was
        left by a crash and is taken over)."""
        return self._claim("gallery", _RESET, holder, ttl_seconds)

    def end_reset(self, holder: str) -> None:
        self.db.gallery.delete_one({"_id": _RESET, "holder": holder})

    def _reset_holder(self) -> str | None:
        doc = self.db.gallery.find_one({"_id": _RESET})
        if doc is None or (now() - doc["taken_at"]).total_seconds() > doc.get("ttl", 0):
            return None
        return doc["holder"]

    # -- intents: operations journalled before their first write (services/repair.py) ----
    # One insert before and one delete after each operation on persons and faces; what a
    # killed operation leaves is found here and finished or undone by repair.

    def begin_intent(self, op: str, *, owner: str, persons: Iterable[str] = (),
                     faces: Iterable[str] = (), images: Iterable[str] = (),
                     **extra: t.Any) -> str:
        """Journal an operation about to write; returns the intent's id for :meth:`end_intent`.

        ``owner`` is the process (``host:pid``); ``persons`` includes persons not yet created.
        """
        intent_id = new_id()
        self._insert("intents", {"_id": intent_id, "op": op, "owner": owner,
                                 "persons": list(persons), "faces": list(faces),
                                 "images": list(images), "started_at": now(), **extra})
        return intent_id

    def add_intent_persons(self, intent_id: str, person_ids: Iterable[str]) -> None:
        """Name more persons in an intent (repair records what it found before it deletes)."""
        doc = self.db.intents.find_one({"_id": intent_id})
        if doc is not None:
            named = list(dict.fromkeys([*doc.get("persons", []), *person_ids]))
            self.db.intents.update_one({"_id": intent_id}, {"$set": {"persons": named}})

    def faces_with_ids(self, face_ids: list[str]) -> list[Doc]:
        """``{_id, person_id, image_id}`` of those of ``face_ids`` that exist."""
        if not face_ids:
            return []
        return list(self.db.faces.find({"_id": {"$in": list(face_ids)}},
                                       {"person_id": 1, "image_id": 1}))

    def end_intent(self, intent_id: str) -> None:
        self.db.intents.delete_one({"_id": intent_id})

    def open_intents(self) -> list[Doc]:
        """Every intent not yet ended: operations running now, or killed while they were."""
        return sorted(self.db.intents.find({}), key=lambda d: d["started_at"])

    def reset_mark(self) -> Doc | None:
        """``{holder, taken_at, ttl}`` of the reset running (or killed while it was), if any."""
        return self.db.gallery.find_one({"_id": _RESET})

    def image_created_after(self, moment: datetime) -> bool:
        """True when an image was stored after ``moment`` (a scan: repair only)."""
        return self.db.images.find_one({"created_at": {"$gt": moment}}) is not None

    # -- blobs: photo, display copy and crop bytes (services/blobs.py) ------------------
    #
    # A blob's bytes live in one of three places, each referred to from a small document
    # (``image_blobs`` per image, ``face_crops`` per face): ``inline`` keeps the seed's data
    # URI in that document; ``gridfs`` and ``files`` keep content-addressed bytes (key: their
    # sha256) in MongoDB's GridFS layout or under DATA_DIR/blobs, and the document names the
    # store and the key. Bytes are written before the document naming them, and the
    # document is deleted before the bytes: a crash leaves at worst bytes nothing names,
    # which :meth:`unreferenced_blobs` finds.

    def attach_blobs(self, kind: str, files: BlobBackend | None) -> None:
        """Choose where new blobs go (``files``, ``gridfs`` or ``inline``); ``files`` is the
        DATA_DIR store, or None where there is no DATA_DIR."""
        backends: dict[str, BlobBackend] = {}
        if self.backend != "embedded":
            backends["gridfs"] = GridBlobs(self)
        if files is not None:
            backends["files"] = files
        if kind not in (*backends, "inline"):
            reason = {"gridfs": "needs MongoDB (MONGODB_URI)", "files": "needs a DATA_DIR"}
            raise ConfigError(f"BLOB_STORE: {kind!r} {reason.get(kind, 'is not a store')}")
        self.blob_kind, self._blob_backends = kind, backends

    def _default_blobs(self) -> None:
        # A store used without the app's settings (scripts, tests) reads every store there is.
        data_dir = self.source[2] if self.source and self.backend == "embedded" else ""
        self.attach_blobs(default_blob_store(self.backend),
                          FileBlobs(os.path.join(data_dir, "blobs")) if data_dir else None)

    def blob_backend(self, kind: str) -> BlobBackend:
        """The ``files`` or ``gridfs`` backend."""
        if not self._blob_backends:
            self._default_blobs()
        try:
            return self._blob_backends[kind]
        except KeyError:
            raise ConfigError(f"BLOB_STORE: {kind!r} is not available here") from None

    def blob_kinds(self) -> list[str]:
        if not self._blob_backends:
            self._default_blobs()
        return list(self._blob_backends)

    def save_blob(self, part: str, data: bytes, mime_type: str, *,
                  kind: str | None = None) -> Doc:
        """Store one part's bytes; returns the fields that name them in its document."""
        kind = kind or self.blob_kind
        data_field, key_field = _BLOB_FIELDS[part]
        key = hashlib.sha256(data).hexdigest()
        if kind == "inline":
            return {data_field: data_uri(data, mime_type), key_field: key,
                    f"{part}_size": len(data), "store": "inline"}
        self._fault_point(lambda: self.blob_backend(kind).put(key, data))
        return {key_field: key, f"{part}_size": len(data), "store": kind}

    def read_blob(self, doc: Doc, part: str) -> bytes:
        """The bytes of one part named by ``doc`` (an ``image_blobs`` or ``face_crops`` one).

        :raise DocumentNotFoundError: the part is not there (a display copy never made).
        """
        data_field, key_field = _BLOB_FIELDS[part]
        if data_field in doc:
            uri = doc[data_field]
            return data_uri_bytes(uri)
        key = doc.get(key_field)
        if not key:
            raise DocumentNotFoundError(f"No {part} stored", details={"part": part})
        stores = [doc.get("store", self.blob_kind)]
        stores += [k for k in self.blob_kinds() if k not in stores]
        for kind in stores:  # a migration moves bytes before it rewrites the document
            data = self.blob_backend(kind).get(key) if kind in self._blob_backends else None
            if data is not None:
                return data
        raise DocumentNotFoundError(f"The stored {part} is missing (run repair)",
                                    details={"part": part, "sha256": key})

    def blob_path(self, doc: Doc, part: str) -> str | None:
        """A file holding the part's bytes, when the files store has it (sent as is)."""
        key = doc.get(_BLOB_FIELDS[part][1])
        if doc.get("store") != "files" or not key or "files" not in self._blob_backends:
            return None
        return self._blob_backends["files"].path(key)

    def _release_blobs(self, docs: Iterable[Doc]) -> None:
        """Delete the bytes the (deleted) documents named, unless another document names
        the same bytes in the same store (identical crops, a display copy that is the
        original)."""
        for doc in docs:
            kind = doc.get("store")
            backend = self._blob_backends.get(kind)
            if backend is None:
                continue
            for key_field in ("sha256", "display_sha256"):
                key = doc.get(key_field)
                if key and not self._blob_named(kind, key):
                    self._fault_point(lambda b=backend, k=key: b.delete(k))

    def _blob_named(self, kind: str, key: str) -> bool:
        return any(self.db[c].find_one({f: key, "store": kind}, {"_id": 1}) is not None
                   for c, f in (("image_blobs", "sha256"), ("image_blobs", "display_sha256"),
                                ("face_crops", "sha256")))

    def named_blob_keys(self) -> dict[str, set[str]]:
        """Every key each store's documents name (reads every blob document's keys)."""
        named: dict[str, set[str]] = {}
        for collection, fields in (("image_blobs", ("sha256", "display_sha256")),
                                   ("face_crops", ("sha256",))):
            projection = {"store": 1, **{f: 1 for f in fields}}
            for doc in self.db[collection].find({}, projection):
                for field in fields:
                    if doc.get(field):
                        named.setdefault(doc.get("store", "inline"), set()).add(doc[field])
        return named

    def unreferenced_blobs(self, made_before: datetime) -> list[tuple[str, str]]:
        """(store, key) of bytes in ``files``/``gridfs`` no document names, written before
        ``made_before`` (newer ones may belong to an upload writing its documents now)."""
        named = self.named_blob_keys()
        return [(kind, key) for kind, backend in self._blob_backends.items()
                for key, written in backend.keys()
                if key not in named.get(kind, set()) and written < made_before]

    def delete_blob(self, kind: str, key: str) -> None:
        """Delete bytes from a store, unless a document names them there by now."""
        if not self._blob_named(kind, key):
            self._fault_point(lambda: self.blob_backend(kind).delete(key))

    def blob_document_ids(self, collection: str, *, not_in: str) -> list[str]:
        """Ids of the blob documents whose bytes are not in store ``not_in`` (documents
        written before they named a store hold data URIs: ``inline``)."""
        return [d["_id"] for d in self.db[collection].find({}, {"store": 1})
                if d.get("store", "inline") != not_in]

    def find_blob_document(self, collection: str, doc_id: str) -> Doc | None:
        return self.db[collection].find_one({"_id": doc_id})

    def repoint_blob_document(self, collection: str, doc: Doc, fields: Doc) -> bool:
        """Point a blob document at bytes copied elsewhere, only if it is unchanged since
        ``doc`` was read (a migration racing a delete or another migration loses)."""
        unset = {f: "" for f in (*_BLOB_DATA_FIELDS, "display_sha256", "display_size")
                 if f in doc and f not in fields}
        update: Doc = {"$set": fields}
        if unset:
            update["$unset"] = unset
        query = {"_id": doc["_id"], "store": doc["store"]} if "store" in doc else {
            "_id": doc["_id"]}
        return self.db[collection].update_one(query, update).matched_count == 1

    def _fault_point(self, write: t.Callable[[], t.Any]) -> t.Any:
        """A write outside the database counts as one for an armed :class:`WriteFault`."""
        fault = self.db._fault if isinstance(self.db, _FaultyDatabase) else None
        if fault is not None:
            fault.before_write()
        result = write()
        if fault is not None:
            fault.after_write()
        return result

    # -- fault injection (tests) ---------------------------------------------------------

    def arm_fault(self, fault: WriteFault) -> None:
        """Count this store's database writes through ``fault`` until :meth:`disarm_fault`."""
        self.disarm_fault()
        self.db = _FaultyDatabase(self.db, fault)

    def disarm_fault(self) -> None:
        if isinstance(self.db, _FaultyDatabase):
            self.db = self.db.raw


def data_uri(data: bytes, mime_type: str) -> str:
    """``data:<mime>;base64,<payload>``: the seed's form of stored bytes (``inline``)."""
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def data_uri_bytes(uri: str) -> bytes:
    """The bytes of a base64 ``data:`` URI this module wrote (line breaks are ignored)."""
    return base64.b64decode("".join(uri.partition(",")[2].split()), validate=True)


def _assignment(fields: Doc, run: int = 0) -> Doc:
    """The update that records how a face got its person: a run's number only with a run's
    kind of assignment, so a later hand edit leaves no run number behind."""
    if run:
        return {"$set": {**fields, "assigned_run": run}}
    return {"$set": fields, "$unset": {"assigned_run": ""}}


def blob_key_field(part: str) -> str:
    """The field of a blob document holding a part's key (its bytes' sha256)."""
    return _BLOB_FIELDS[part][1]


def default_blob_store(backend: str) -> str:
    """``gridfs`` on MongoDB (the database holds everything), ``files`` on the embedded store."""
    return "files" if backend == "embedded" else "gridfs"


class BlobBackend(t.Protocol):
    """Content-addressed bytes: the key is the bytes' sha256 (hex)."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> None: ...

    def keys(self) -> Iterator[tuple[str, datetime]]: ...

    def path(self, key: str) -> str | None: ...

    def wipe(self) -> int: ...


class GridBlobs:
    """Bytes in GridFS, bucket ``blobs`` (``blobs.files``, ``blobs.chunks``): on MongoDB
    through pymongo's own ``GridFSBucket``; on mongomock, which cannot run it, written with
    plain collection operations in the layout the GridFS specification gives (255 KiB
    chunks, then the ``files`` document that makes the blob exist).

    A process killed between the chunks and the ``files`` document leaves chunks that the
    next put of the same key replaces and :meth:`keys` reports (dated by their ids).
    """

    CHUNK_BYTES = 255 * 1024

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def _db(self) -> t.Any:
        # The raw database: a whole put counts as one write to an armed fault
        # (:meth:`Store._fault_point`), and GridFSBucket takes a real Database only.
        db = self._store.db
        return db.raw if isinstance(db, _FaultyDatabase) else db

    def _bucket(self) -> gridfs.GridFSBucket | None:
        if self._store.backend != "mongodb":
            return None
        return gridfs.GridFSBucket(self._db, bucket_name="blobs")

    def put(self, key: str, data: bytes) -> None:
        # Content-addressed: the same key is the same bytes, dated now again so the sweep's
        # grace period protects the document about to name them.
        if self._db["blobs.files"].find_one({"_id": key}, {"_id": 1}) is not None:
            self._db["blobs.files"].update_one({"_id": key}, {"$set": {"uploadDate": now()}})
            return
        self._db["blobs.chunks"].delete_many({"files_id": key})  # left by a killed put
        bucket = self._bucket()
        try:
            if bucket is not None:
                bucket.upload_from_stream_with_id(key, key, data, chunk_size_bytes=self.CHUNK_BYTES)
                return
            self._put_chunks(key, data)
        except (pymongo.errors.DuplicateKeyError, pymongo.errors.BulkWriteError,
                gridfs.errors.FileExists):
            pass  # the same bytes, put by another upload meanwhile

    def _put_chunks(self, key: str, data: bytes) -> None:
        size = self.CHUNK_BYTES
        starts = range(0, len(data), size) if data else [0]
        chunks = [{"_id": ObjectId(), "files_id": key, "n": n, "data": data[at:at + size]}
                  for n, at in enumerate(starts)]
        for first in range(0, len(chunks), 16):
            self._db["blobs.chunks"].insert_many(chunks[first:first + 16])
        self._db["blobs.files"].insert_many([{"_id": key, "length": len(data),
                                              "chunkSize": size, "uploadDate": now(),
                                              "filename": key}])

    def get(self, key: str) -> bytes | None:
        bucket = self._bucket()
        if bucket is not None:
            try:
                return bucket.open_download_stream(key).read()
            except (gridfs.errors.NoFile, gridfs.errors.CorruptGridFile):
                return None  # read as missing: repair's sweep and the migration report it
        doc = self._db["blobs.files"].find_one({"_id": key})
        if doc is None:
            return None
        chunks = sorted(self._db["blobs.chunks"].find({"files_id": key}), key=lambda c: c["n"])
        data = b"".join(bytes(c["data"]) for c in chunks)
        return data if len(data) == doc["length"] else None

    def delete(self, key: str) -> None:
        bucket = self._bucket()
        if bucket is not None:
            try:
                bucket.delete(key)  # the files document, then the chunks
            except gridfs.errors.NoFile:
                self._db["blobs.chunks"].delete_many({"files_id": key})
            return
        self._db["blobs.files"].delete_one({"_id": key})
        self._db["blobs.chunks"].delete_many({"files_id": key})

    def keys(self) -> Iterator[tuple[str, datetime]]:
        written = {d["_id"]: d["uploadDate"]
                   for d in self._db["blobs.files"].find({}, {"uploadDate": 1})}
        yield from written.items()
        # Chunks whose files document was never written (a killed put): one first chunk a
        # blob is read, as the files documents were.
        for chunk in self._db["blobs.chunks"].find({"n": 0}, {"files_id": 1}):
            if chunk["files_id"] not in written:
                yield chunk["files_id"], id_time(str(chunk["_id"]))

    def path(self, key: str) -> str | None:
        return None

    def wipe(self) -> int:
        keys = [key for key, _ in self.keys()]
        for key in keys:
            self.delete(key)
        return len(keys)

def _move_fields(doc: Doc) -> Doc:
    return {k: v for k, v in doc.items() if k not in {"_id", "run"}}


def _person_flags(include_hidden: bool, favorite_only: bool) -> Doc:
    """The filter on a person's ``hidden`` and ``favorite`` flags. Persons made before the
    flags existed have no such fields: ``$nin: [True]`` matches a missing field on every
    backend, where equality with False would not (and ``$ne`` is not used here)."""
    query: Doc = {}
    if not include_hidden:
        query["hidden"] = {"$nin": [True]}
    if favorite_only:
        query["favorite"] = True
    return query


class WriteFault:
    """Counts database writes; after write number ``after`` the process dies.

    ``die`` is what dying is: by default :class:`SimulatedCrash` is raised, so the same store
    can be inspected (mongomock loses everything with its process); a subprocess passes
    ``os._exit``-like functions for a real kill. ``after=None`` only counts.
    """

    def __init__(self, after: int | None = None,
                 die: t.Callable[[int], None] | None = None) -> None:
        self.after = after
        self.writes = 0
        self._die = die

    def before_write(self) -> None:
        # A dead process writes nothing more: a finally's clean-up raises again.
        if self.after is not None and self.writes >= self.after:
            self.kill()

    def after_write(self) -> None:
        self.writes += 1
        if self.after is not None and self.writes >= self.after:
            self.kill()

    def kill(self) -> None:
        if self._die is not None:
            self._die(self.writes)
        raise SimulatedCrash(f"killed after database write {self.after}")


#: Collection methods that write; each call is one write to :class:`WriteFault`.
_WRITE_METHODS = frozenset({
    "insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
    "delete_many", "find_one_and_update", "find_one_and_delete", "find_one_and_replace",
    "bulk_write"})


class _FaultyDatabase:
    """A database whose collections count their writes (only while a fault is armed)."""

    def __init__(self, raw: t.Any, fault: WriteFault) -> None:
        self.raw, self._fault = raw, fault

    def __getitem__(self, name: str) -> _FaultyCollection:
        return _FaultyCollection(self.raw[name], self._fault)

    def __getattr__(self, name: str) -> t.Any:
        if name.startswith("_") or name in {"command", "client", "name"}:
            return getattr(self.raw, name)
        return self[name]


class _FaultyCollection:
    def __init__(self, raw: t.Any, fault: WriteFault) -> None:
        self._raw, self._fault = raw, fault

    def __getattr__(self, name: str) -> t.Any:
        attribute = getattr(self._raw, name)
        if name not in _WRITE_METHODS:
            return attribute
        fault = self._fault

        def write(*args: t.Any, **kwargs: t.Any) -> t.Any:
            fault.before_write()
            result = attribute(*args, **kwargs)
            fault.after_write()
            return result

        return write
