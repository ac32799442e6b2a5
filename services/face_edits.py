"""Corrections that stick: faces the detector missed (drawn by hand) and false faces (deleted).

A drawn face is encoded from the box the user drew on the *stored* image (the grid of every
``face_location``): dlib's shape predictor finds the 68 landmarks inside that rectangle even
where the detector found nothing, and the encoder turns them into the usual 128-d vector. It
is then written as an upload writes a face (crop, face, counters, ``face_changes``), assigned
by hand to the person named, or by the upload's rule, and marked manual either way.

A deleted face leaves its box in the image's ``suppressed_boxes``; a detection overlapping
one (:func:`overlap` above :data:`SUPPRESS_IOU`) is dropped before it is written
(:func:`drop_suppressed`). No path re-detects a stored image today: an upload of the same
bytes answers the stored image without analysis, and deleting an image deletes its boxes with
it; :func:`services.upload.store_analysis` takes ``suppressed`` so a re-detection passes them.

Both are journalled (:func:`bookkeeping.journal`) with the image: a kill between writes leaves
an intent whose repair recounts the persons and the image's ``face_count``
(:func:`recount_image`) and tells every worker's index where the face is.
"""

from __future__ import annotations

import dataclasses
import typing as t
from collections.abc import Iterable
from collections.abc import Mapping

import numpy as np

from errors import ConflictError
from errors import DocumentNotFoundError
from errors import ValidationError
from services import bookkeeping
from services import budget
from services import clustering
from services import corrections
from services import face_engine
from services import imaging
from services import people
from services import storage
from services.context import Gallery
from services.storage import Store

if t.TYPE_CHECKING:  # pragma: no cover
    from services.ingest import Analysis

Doc = dict[str, t.Any]
Box = imaging.Box

#: Intents of these operations name one image whose ``face_count`` repair recounts.
OPS = ("add_face", "delete_face")
#: A detection overlapping a suppressed box by more than this (intersection over union) is
#: the same false face found again.
SUPPRESS_IOU = 0.5
#: The shortest side a drawn box may have: the shape predictor needs some pixels to place
#: 68 landmarks in, and a smaller "face" cannot be recognised anyway.
MIN_BOX_SIDE = 8


# -- drawing a face ------------------------------------------------------------------------

def add_face(gallery: Gallery, image_id: str, location: Mapping[str, int],
             person_id: str | None = None) -> Doc:
    """Store a face the detector missed, boxed by hand, and give it a person (manual).

    ``location``: ``top``, ``right``, ``bottom``, ``left`` in the stored image's pixels.
    ``person_id``: its person; None chooses as an upload does (the nearest person within
    tolerance that has no face in this photo and that no correction forbids, else a new one).
    :raise DocumentNotFoundError: unknown image or person (404).
    :raise ValidationError: the box is not inside the image, or under MIN_BOX_SIDE (400).
    :raise ConflictError: the person has a face in this photo already, or a re-clustering
        runs (409).
    """
    store = gallery.store
    image = store.get_image(image_id)
    target = store.get_person(person_id)["_id"] if person_id is not None else None
    box = check_box(location, image["width"], image["height"])
    bookkeeping.refuse_during_recluster(store)
    if target is not None:
        _refuse_second_face(store, image["_id"], target)  # before the costly encoding
    encoding, quality, crop = _encode_box(gallery, image, box)
    distance: float | None = None
    if target is None:
        target, distance = _choose_person(gallery, image["_id"], encoding)
    face_id = storage.new_id()
    new_person_id = storage.new_id()
    chosen = target or new_person_id
    with bookkeeping.journal(store, "add_face", faces=[face_id], persons=[chosen],
                             images=[image["_id"]]):
        if target is None:
            person = bookkeeping.new_person_doc(store, face_count=1, thumbnail_face_id=face_id,
                                                thumbnail_quality=quality)
            person.update(_id=new_person_id, manual_face_count=1)
            store.insert_persons([person])
            _insert_face(store, image, face_id, chosen, box, encoding, quality, crop)
        else:
            # Locked while the photo is checked and the face lands: two edits (or a move)
            # cannot both bring a face of this photo into the person.
            with bookkeeping.person_lock(store, chosen):
                _refuse_second_face(store, image["_id"], chosen)
                _insert_face(store, image, face_id, chosen, box, encoding, quality, crop)
            if store.adjust_person_counts(chosen, 1, 1, manual=1):
                store.offer_thumbnail(chosen, face_id, quality)
            else:
                # Emptied and deleted since it was looked up: back around this face.
                bookkeeping.restore_person(store, chosen)
        store.adjust_image_face_count(image["_id"], 1)
        store.log_face_changes([(face_id, chosen)])
        if (store.find_image(image["_id"]) or {}).get("status") != "ready":
            # Deleted meanwhile: its delete may have listed the faces before this one.
            _remove_face(store, face_id)
            raise DocumentNotFoundError.for_id("Image", image["_id"])
    gallery.sync_index()
    return {**people.get_face(store, face_id), "new_person": target is None,
            "distance": None if distance is None else round(distance, 4)}


def check_box(location: Mapping[str, t.Any], width: int, height: int) -> Box:
    """The box as ``(top, right, bottom, left)`` once it lies inside a ``width`` x ``height``
    image with each side at least MIN_BOX_SIDE; ValidationError (400) otherwise."""
    try:
        top, right, bottom, left = (int(location[k]) for k in ("top", "right", "bottom", "left"))
    except (KeyError, TypeError, ValueError):
        raise ValidationError("The box needs integer top, right, bottom and left") from None
    details = {"box": {"top": top, "right": right, "bottom": bottom, "left": left},
               "width": width, "height": height}
    if not (0 <= left and right <= width and 0 <= top and bottom <= height):
        raise ValidationError(f"The box must lie inside the {width}x{height} image",
                              details=details)
    if right - left < MIN_BOX_SIDE or bottom - top < MIN_BOX_SIDE:
        raise ValidationError(f"The box must be at least {MIN_BOX_SIDE} pixels on each side "
                              "(right > left, bottom > top)", details=details)
    return top, right, bottom, left


def _encode_box(gallery: Gallery, image: Doc, box: Box) -> tuple[np.ndarray, float, bytes]:
    """Encoding, quality and JPEG crop of a box on the stored photo (the original, or its
    compressed copy when originals are off: the boxes' grid either way)."""
    settings = gallery.settings
    store = gallery.store
    data = store.read_blob(store.get_image_blob(image["_id"]), "original")
    max_pixels = settings["IMAGE_MAX_PIXELS"]
    # Decoded pixels share the process's budget with uploads (services/budget.py).
    with budget.for_process(max_pixels).hold(image["width"] * image["height"]):
        decoded = imaging.decode_upload(data, allowed_formats=settings["ALLOWED_EXTENSIONS"],
                                        max_pixels=max_pixels)
        encoding = gallery.engine.encode(decoded.rgb, [box])[0]
        # No detector score: the box came from a hand, so size and sharpness alone.
        quality = face_engine.quality_score(decoded.rgb, box, None)
        crop = imaging.encode_jpeg(
            imaging.crop_box(decoded.rgb, box, settings["FACE_CROP_PADDING"]),
            settings["IMAGE_QUALITY"])
    return encoding, quality, crop


def _choose_person(gallery: Gallery, image_id: str, encoding: np.ndarray
                   ) -> tuple[str | None, float | None]:
    """The upload's rule for one face: nearest person within tolerance; never one with a
    face in this photo already, nor one a nearly identical rejected face was taken out of."""
    store = gallery.store
    index = gallery.sync_index()
    embeddings, _, person_ids, _ = index.snapshot()
    banned = {f["person_id"] for f in store.faces_of_image(image_id)}
    rejected = corrections.forbidden_for_new_faces(store, index, [encoding])
    if rejected:
        banned |= rejected[0]
    [(person_id, distance)] = clustering.assign_faces(
        encoding[np.newaxis], embeddings, person_ids,
        tolerance=gallery.settings["FACE_RECOGNITION_TOLERANCE"], forbidden=[banned])
    return person_id, distance


def _refuse_second_face(store: Store, image_id: str, person_id: str) -> None:
    for other in store.faces_of_image(image_id):
        if other["person_id"] == person_id:
            raise ConflictError(
                f"Image {image_id} already has a face of this person ({other['_id']}); two "
                "faces of one photo cannot be one person",
                details={"image_id": image_id, "face_id": other["_id"]})


def _insert_face(store: Store, image: Doc, face_id: str, person_id: str, box: Box,
                 encoding: np.ndarray, quality: float, crop: bytes) -> None:
    top, right, bottom, left = box
    moment = storage.now()
    face = {
        # A number of its own: every worker's index reads new faces by it.
        "_id": face_id, "seq": store.next_seq("faces"), "image_id": image["_id"],
        "image_seq": image["seq"], "person_id": person_id,
        "embedding": storage.embedding_to_bytes(encoding),
        "face_location": {"top": top, "right": right, "bottom": bottom, "left": left},
        "quality_score": round(quality, 4), "detector_score": None,
        "is_manual_assignment": True, "assigned_by": "manual", "assigned_via": "drawn",
        "drawn": True,
        "cropped_face_filename": f"face_{face_id}.jpg", "created_at": moment,
        "updated_at": moment,
    }
    store.insert_faces([face], [{"_id": face_id, "image_id": image["_id"],
                                 "mime_type": "image/jpeg",
                                 **store.save_blob("crop", crop, "image/jpeg")}])


# -- deleting a false face -----------------------------------------------------------------

def delete_face(store: Store, face_id: str) -> Doc:
    """Delete a false face; its person goes if emptied, and its box is suppressed on the
    image so a later detection there is not stored again.

    :raise DocumentNotFoundError: unknown face (404).
    :raise ConflictError: a re-clustering runs (409).
    """
    bookkeeping.refuse_during_recluster(store)
    face = store.get_face(face_id)
    image_id = face["image_id"]
    with bookkeeping.journal(store, "delete_face", faces=[face["_id"]],
                             persons=[face["person_id"]], images=[image_id]):
        # The box first: a kill after it leaves the face with its suppression, which a retry
        # completes, never a deleted face whose box a re-detection brings back.
        store.suppress_box(image_id, face["face_location"])
        removed = _remove_face(store, face["_id"])
    if removed is None:
        raise DocumentNotFoundError.for_id("Face", face["_id"])  # deleted by another request
    image = store.find_image(image_id) or {}
    return {"deleted_face_id": face["_id"], "image_id": image_id,
            "person_id": removed["person_id"], "person_deleted": removed["person_deleted"],
            "image_face_count": image.get("face_count", 0),
            "suppressed_box": face["face_location"]}


def _remove_face(store: Store, face_id: str) -> Doc | None:
    """Delete one face and count it off its person and image; None if another caller did."""
    # Logged before the delete, as an image's faces are (bookkeeping._log_removal): a kill in
    # between leaves a face repair deletes, never a ghost in every worker's index.
    store.log_face_changes([(face_id, "")])
    deleted = store.delete_faces([face_id])
    if not deleted:
        return None
    face = deleted[0]
    person_id = face["person_id"]
    store.adjust_person_counts(person_id, -1, -1,
                               manual=-1 if face.get("is_manual_assignment") else 0)
    store.adjust_image_face_count(face["image_id"], -1)
    emptied = bookkeeping.settle_person(store, person_id, left_face_id=face_id)
    return {"person_id": person_id, "person_deleted": emptied}


def recount_image(store: Store, image_id: str) -> None:
    """Set an image's ``face_count`` from its faces (repair of a killed add or delete)."""
    if store.find_image(image_id) is not None:
        store.set_image_fields(image_id, {"face_count": len(store.faces_of_image(image_id))})


# -- keeping deleted faces deleted ---------------------------------------------------------

def overlap(a: Box, b: Box) -> float:
    """Intersection over union of two (top, right, bottom, left) boxes, 0..1."""
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[1], b[1]) - max(a[3], b[3])
    if height <= 0 or width <= 0:
        return 0.0
    inter = height * width
    union = (a[2] - a[0]) * (a[1] - a[3]) + (b[2] - b[0]) * (b[1] - b[3]) - inter
    return inter / union if union > 0 else 0.0


def as_box(location: Mapping[str, int] | Iterable[int]) -> Box:
    """A ``face_location`` dict (or a box already) as (top, right, bottom, left)."""
    if isinstance(location, Mapping):
        return (int(location["top"]), int(location["right"]), int(location["bottom"]),
                int(location["left"]))
    top, right, bottom, left = (int(v) for v in location)
    return top, right, bottom, left


def drop_suppressed(analysis: Analysis, suppressed: Iterable[Mapping[str, int] | Box]
                    ) -> Analysis:
    """The analysis without the faces whose box overlaps a suppressed one (IoU above
    SUPPRESS_IOU): false faces the user deleted are not found again."""
    boxes = [as_box(b) for b in suppressed]
    if not boxes:
        return analysis
    kept = [f for f in analysis.faces
            if all(overlap(f.box, b) <= SUPPRESS_IOU for b in boxes)]
    return dataclasses.replace(analysis, faces=kept)
