"""Apply an export document (:mod:`services.exchange`) to this gallery: persons, names,
corrections, albums and filing come back on the photos that are here, and wait for the ones
that are not.

Photos are matched by sha256 and faces by box overlap (:mod:`services.import_moves`): an
exported face is the stored face of the same photo whose box overlaps it most, with an
intersection over union of at least 0.5 (boxes are first scaled to this gallery's pixels
when the photo was stored at another size). A matched face is put in its exported person
(recreated with the exported id and name when absent) as a hand assignment
(``assigned_by: manual``, ``assigned_via: "import"``): importing is the user's word. The
entries of a photo not in the gallery are kept in ``pending_imports`` under its sha256 and
applied when it is uploaded (:func:`after_upload`). Applying is idempotent: what is in
place already is left untouched, so importing one document twice writes nothing the second
time.

The moves are made in batches of photos, each journalled (:func:`bookkeeping.journal`, op
``import``) and under the re-clustering lock (:mod:`services.import_moves`): a kill leaves an
intent whose repair recounts every person it names (a person created for faces that never
arrived is deleted). Corrections, albums, sections and filing are one write each, with
nothing derived from them.
"""

from __future__ import annotations

import logging
import typing as t
from collections import Counter
from collections import defaultdict

from errors import GalleryError
from services import bookkeeping
from services import exchange
from services import import_moves
from services import people
from services import storage
from services.storage import Store

log = logging.getLogger(__name__)

Doc = dict[str, t.Any]

#: Unmatched faces and skipped corrections listed in a report (all are counted by reason).
REPORT_LIST_LIMIT = 100


class _Report:
    """What an import did, counted as it goes."""

    def __init__(self) -> None:
        self.persons: dict[str, set[str]] = {"created": set(), "matched": set(),
                                             "updated": set()}
        self.counts: Counter[str] = Counter()
        self.unmatched: list[Doc] = []
        self.reasons: Counter[str] = Counter()
        self.skipped: list[Doc] = []
        self.skip_reasons: Counter[str] = Counter()

    def unmatched_face(self, entry: Doc, reason: str) -> None:
        self.reasons[reason] += 1
        if len(self.unmatched) < REPORT_LIST_LIMIT:
            self.unmatched.append({"image_sha256": entry["image_sha256"], "box": entry["box"],
                                   "person_id": entry["person_id"], "reason": reason})

    def skipped_correction(self, kind: str, entry: Doc, reason: str) -> None:
        self.skip_reasons[reason] += 1
        if len(self.skipped) < REPORT_LIST_LIMIT:
            self.skipped.append({"kind": kind, **entry, "reason": reason})

    def as_dict(self) -> Doc:
        c = self.counts
        created = self.persons["created"]
        return {
            "persons": {"created": len(created),
                        "matched": len(self.persons["matched"] - created),
                        "updated": len(self.persons["updated"] - created),
                        "created_ids": sorted(created)},
            "images": {"matched": c["images_matched"], "missing": c["images_missing"],
                       "filed": c["images_filed"]},
            "faces": {"matched": c["faces_matched"], "assigned": c["faces_assigned"],
                      "already_assigned": c["faces_already"],
                      "pending": c["faces_pending"],
                      "unmatched": sum(self.reasons.values()),
                      "unmatched_by_reason": dict(self.reasons),
                      "unmatched_list": self.unmatched},
            "corrections": {"rejections_applied": c["rejections_applied"],
                            "rejections_present": c["rejections_present"],
                            "not_same_applied": c["not_same_applied"],
                            "not_same_present": c["not_same_present"],
                            "pending": c["corrections_pending"],
                            "skipped": sum(self.skip_reasons.values()),
                            "skipped_by_reason": dict(self.skip_reasons),
                            "skipped_list": self.skipped},
            "albums": {"created": c["albums_created"], "matched": c["albums_matched"]},
            "sections": {"created": c["sections_created"],
                         "matched": c["sections_matched"]},
            "pending_imports": {"stored": c["pending_stored"],
                                "unchanged": c["pending_unchanged"]},
        }


def import_document(store: Store, document: t.Any) -> Doc:
    """Check ``document`` (an export, parsed), apply it, and report what matched and not.

    :raise ValidationError: not an export document of a version this server reads; nothing
        was written (400).
    :raise ConflictError: faces are being re-clustered (409).
    """
    read = exchange.read_document(document)
    bookkeeping.refuse_during_recluster(store)
    report = _Report()
    _apply(store, read, report, keep_pending=True)
    return report.as_dict()


def after_upload(store: Store, result: Doc) -> Doc:
    """Apply the people data imported before this photo was uploaded, if any; returns the
    upload's result with its faces' persons as they are now (and ``imported``: the report).

    Called by the upload inside its intent, which names the photo's sha256: a kill part way
    leaves that intent, and repair applies what waits again (:func:`apply_pending`, which is
    idempotent) once it has recounted. The upload is stored whatever happens here: a pending
    entry that cannot be applied is logged and left, never the upload's failure.
    """
    image = store.find_image(result.get("image_id", ""))
    if image is None or result.get("duplicate"):
        return result
    try:
        report = apply_pending(store, image["sha256"])
    except GalleryError as err:
        log.warning("people data waiting for %s not applied: %s", image["sha256"], err.message)
        return result
    if report is None:
        return result
    faces = {f["_id"]: f["person_id"] for f in store.faces_of_image(image["_id"])}
    names = people.person_names(store, set(faces.values()))
    for face in result.get("faces", []):
        person_id = faces.get(face["face_id"], face["person_id"])
        face.update(person_id=person_id, person_name=names.get(person_id))
    return {**result, "imported": report}


def finish_pending(store: Store, sha256: str) -> None:
    """Repair's call for a killed upload: :func:`apply_pending`, a refusal logged (a
    re-clustering running now: what waits is applied by the next import naming the photo)."""
    try:
        apply_pending(store, sha256)
    except GalleryError as err:
        log.warning("people data waiting for %s not applied: %s", sha256, err.message)


def apply_pending(store: Store, sha256: str) -> Doc | None:
    """Apply the people data waiting for the photo with these bytes, when it is here, then
    drop it; returns the report (None: nothing waits, or the photo is not here).

    The entry is deleted last: a kill part way leaves it for the next call (repair makes
    one for a killed upload), which applies it again; what is in place already is skipped.
    """
    pending = store.pending_import(sha256)
    if pending is None or store.image_with_hash(sha256) is None:
        return None
    read = exchange.read_document({
        "format": exchange.FORMAT, "version": exchange.VERSION,
        **{key: pending.get(key, []) for key in exchange.LISTS}})
    report = _Report()
    _apply(store, read, report, keep_pending=False)
    store.delete_pending_import(sha256)
    return report.as_dict()


# -- applying -----------------------------------------------------------------------------

def _apply(store: Store, read: Doc, report: _Report, *, keep_pending: bool) -> None:
    persons = {p["id"]: p for p in read["persons"]}
    albums = _ensure_albums(store, read["albums"], read["sections"], report)
    images = {i["sha256"]: i for i in read["images"]}
    faces: dict[str, list[Doc]] = defaultdict(list)
    for face in read["faces"]:
        faces[face["image_sha256"]].append(face)
    found: dict[str, Doc | None] = {}
    photos: list[tuple[Doc, list[Doc], float]] = []
    for sha in dict.fromkeys([*images, *faces]):
        local = found[sha] = store.image_with_hash(sha)
        if local is None:
            report.counts["images_missing"] += 1
            continue
        report.counts["images_matched"] += 1
        if keep_pending:
            # Left by an upload that failed to apply it: applied now, and dropped.
            apply_pending(store, sha)
        if sha in images:
            _file(store, local, images[sha], albums, report)
        if faces.get(sha):
            photos.append((local, faces[sha], _scale(local, images.get(sha))))
    for start in range(0, len(photos), import_moves.BATCH_PHOTOS):
        done = import_moves.apply_batch(
            store, photos[start:start + import_moves.BATCH_PHOTOS], persons)
        report.counts["faces_assigned"] += done.assigned
        report.counts["faces_already"] += done.already
        report.counts["faces_matched"] += done.assigned + done.already
        for entry, reason in done.left:
            report.unmatched_face(entry, reason)
        report.persons["created"] |= done.persons_created
        report.persons["matched"] |= done.persons_matched
    for person in persons.values():
        _update_person(store, person, report, images)
    waiting = _apply_corrections(store, read, found, report)
    if keep_pending:
        _keep_pending(store, read, found, faces, persons, waiting, report)
    else:
        report.counts["faces_pending"] = 0


def _ensure_albums(store: Store, albums: list[Doc], sections: list[Doc], report: _Report
                   ) -> set[str]:
    """Create the albums and sections absent here, with their ids; returns the ids present."""
    present = set()
    for album in albums:
        if store.find_album(album["id"]) is None:
            moment = storage.now()
            store.insert_album({"_id": album["id"], "name": album["name"],
                                "description": album["description"], "created_at": moment,
                                "updated_at": moment})
            report.counts["albums_created"] += 1
        else:
            report.counts["albums_matched"] += 1
        present.add(album["id"])
    for section in sections:
        if store.find_section(section["id"]) is None:
            moment = storage.now()
            album_id = section["album_id"] if store.find_album(section["album_id"]) else ""
            store.insert_section({"_id": section["id"], "name": section["name"],
                                  "description": section["description"],
                                  "album_id": album_id, "created_at": moment,
                                  "updated_at": moment})
            report.counts["sections_created"] += 1
        else:
            report.counts["sections_matched"] += 1
        present.add(section["id"])
    return present


def _file(store: Store, image: Doc, entry: Doc, present: set[str], report: _Report) -> None:
    """File a photo as it was filed in the export (an album or section gone here: left)."""
    album = entry["album_id"] if entry["album_id"] in present or store.find_album(
        entry["album_id"]) else ""
    section = entry["section_id"] if entry["section_id"] in present or store.find_section(
        entry["section_id"]) else ""
    if (album or section) and (image.get("album_id", ""), image.get("section_id", "")) != (
            album, section):
        store.set_image_fields(image["_id"], {"album_id": album, "section_id": section,
                                              "updated_at": storage.now()})
        report.counts["images_filed"] += 1


def _scale(image: Doc, entry: Doc | None) -> float:
    """Exported boxes are in the exporting gallery's stored pixels: scale them to ours."""
    if entry and entry.get("width") and image.get("width"):
        return float(image["width"]) / float(entry["width"])
    return 1.0


def _update_person(store: Store, entry: Doc, report: _Report, images: dict[str, Doc]
                   ) -> None:
    """Give a person present here the exported name (when a user gave it), flags, birth
    date and cover face; one write, only when something differs."""
    person = store.find_person(entry["id"])
    if person is None:
        return
    fields: Doc = {}
    if entry["named_by_user"] and person["name"] != entry["name"]:
        fields.update(name=entry["name"], name_lc=entry["name"].lower(), named_by_user=True)
    for key in ("hidden", "favorite"):
        if bool(person.get(key, False)) != entry[key]:
            fields[key] = entry[key]
    if (person.get("birth_date") or None) != entry["birth_date"]:
        fields["birth_date"] = entry["birth_date"]
    if entry["cover_face"] is not None:
        cover = _locate(store, entry["cover_face"], {}, images)
        if (cover is not None and cover["person_id"] == entry["id"]
                and bookkeeping.cover_of(person) != cover["_id"]):
            fields.update(thumbnail_face_id=cover["_id"],
                          thumbnail_quality=bookkeeping.COVER_QUALITY)
    if fields:
        fields["updated_at"] = storage.now()
        store.set_person_fields(entry["id"], fields)
        report.persons["updated"].add(entry["id"])


def _locate(store: Store, ref: Doc, cache: dict[str, tuple[Doc, list[Doc]] | None],
            images: dict[str, Doc]) -> Doc | None:
    """The stored face an exported (photo, box) names, or None (photo absent, no overlap).
    ``images``: the document's images by sha256, whose widths scale the box to ours."""
    sha = ref["image_sha256"]
    if sha not in cache:
        image = store.image_with_hash(sha)
        cache[sha] = None if image is None else (image, store.faces_of_image(image["_id"]))
    found = cache[sha]
    if found is None:
        return None
    return import_moves.match_faces(found[1], [ref],
                                    _scale(found[0], images.get(sha))).get(0)


def _apply_corrections(store: Store, read: Doc, found: dict[str, Doc | None], report: _Report
                       ) -> dict[str, list[Doc]]:
    """Recreate rejections and not-same pairs whose faces and persons are here; returns
    those that wait for a photo, by the sha256 of each photo they wait for."""
    pending_persons: dict[str, set[str]] = defaultdict(set)
    for face in read["faces"]:
        if found.get(face["image_sha256"]) is None:
            pending_persons[face["person_id"]].add(face["image_sha256"])
    waiting: dict[str, list[Doc]] = defaultdict(list)
    cache: dict[str, tuple[Doc, list[Doc]] | None] = {}
    images = {i["sha256"]: i for i in read["images"]}

    def here(sha: str) -> bool:
        # A rejection may name a photo the document lists nowhere else: looked up then.
        if sha not in found:
            found[sha] = store.image_with_hash(sha)
        return found[sha] is not None

    for entry in read["rejections"]:
        ref, person_id = entry["face"], entry["person_id"]
        face = _locate(store, ref, cache, images)
        person_here = store.find_person(person_id) is not None
        if face is not None and person_here:
            if face["person_id"] == person_id:
                report.skipped_correction("rejection", entry, "face_is_in_that_person")
            elif store.add_rejection(face["_id"], person_id):
                report.counts["rejections_applied"] += 1
            else:
                report.counts["rejections_present"] += 1
            continue
        shas = set(pending_persons.get(person_id, set()))
        photo_here = here(ref["image_sha256"])
        if not photo_here:
            shas.add(ref["image_sha256"])
        if face is None and photo_here:
            report.skipped_correction("rejection", entry, "no_face_overlaps_box")
        elif shas:
            for sha in shas:
                waiting[sha].append({"kind": "rejection", **entry})
            report.counts["corrections_pending"] += 1
        else:
            report.skipped_correction("rejection", entry, "person_absent")
    for entry in read["not_same"]:
        a, b = entry["person_id"], entry["other_person_id"]
        if a == b:
            report.skipped_correction("not_same", entry, "same_person")
        elif store.find_person(a) is not None and store.find_person(b) is not None:
            if store.add_not_same(a, b):
                report.counts["not_same_applied"] += 1
            else:
                report.counts["not_same_present"] += 1
        elif pending_persons.get(a) or pending_persons.get(b):
            for sha in pending_persons.get(a, set()) | pending_persons.get(b, set()):
                waiting[sha].append({"kind": "not_same", **entry})
            report.counts["corrections_pending"] += 1
        else:
            report.skipped_correction("not_same", entry, "person_absent")
    return waiting


def _keep_pending(store: Store, read: Doc, found: dict[str, Doc | None],
                  faces: dict[str, list[Doc]], persons: dict[str, Doc],
                  waiting: dict[str, list[Doc]], report: _Report) -> None:
    """Store the entries of each photo not here under its sha256, for its upload."""
    images = {i["sha256"]: i for i in read["images"]}
    for sha in sorted({s for s, image in found.items() if image is None} | set(waiting)):
        if found.get(sha) is not None:
            continue
        own = faces.get(sha, [])
        report.counts["faces_pending"] += len(own)
        kinds = waiting.get(sha, [])
        doc = {"_id": sha, "images": [images[sha]] if sha in images else [],
               "faces": own,
               "persons": [persons[p] for p in dict.fromkeys(f["person_id"] for f in own)
                           if p in persons],
               "rejections": [{"face": e["face"], "person_id": e["person_id"]}
                              for e in kinds if e["kind"] == "rejection"],
               "not_same": [{"person_id": e["person_id"],
                             "other_person_id": e["other_person_id"]}
                            for e in kinds if e["kind"] == "not_same"],
               "albums": [], "sections": []}
        if store.pending_import(sha) == doc:
            report.counts["pending_unchanged"] += 1
        else:
            store.put_pending_import(doc)
            report.counts["pending_stored"] += 1
