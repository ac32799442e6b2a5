"""The labelled photos of ../shared/faces/dev: reading the labels and scoring persons.

Used by the dev-set tests and by ``bench/assignment.py``. The photos are never copied into the
repository; everything here reads them where they are.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from services import clustering

DEV_SET = Path(__file__).resolve().parent.parent.parent / "shared" / "faces" / "dev"


@dataclass(frozen=True)
class Photo:
    file: str
    identities: tuple[str, ...]
    faces_hog: int
    width: int
    height: int


def available(folder: Path = DEV_SET) -> bool:
    return (folder / "MANIFEST.tsv").exists()


def manifest(folder: Path = DEV_SET) -> list[Photo]:
    """Every photo in MANIFEST order."""
    with open(folder / "MANIFEST.tsv", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [Photo(r["file"], tuple(i for i in r["identities"].split(",") if i != "-"),
                      int(r["faces_hog"]), int(r["width"]), int(r["height"])) for r in rows]


def face_boxes(folder: Path = DEV_SET) -> dict[str, list[tuple[tuple[int, int, int, int], str]]]:
    """file -> [((top, right, bottom, left), identity)] as the reference HOG found them."""
    boxes: dict[str, list[tuple[tuple[int, int, int, int], str]]] = {}
    with open(folder / "FACES.tsv", newline="") as handle:
        for r in csv.DictReader(handle, delimiter="\t"):
            box = (int(r["top"]), int(r["right"]), int(r["bottom"]), int(r["left"]))
            boxes.setdefault(r["file"], []).append((box, r["identity"]))
    return boxes


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    top, right = max(a[0], b[0]), min(a[1], b[1])
    bottom, left = min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    area = (a[1] - a[3]) * (a[2] - a[0]) + (b[1] - b[3]) * (b[2] - b[0]) - inter
    return inter / area if area else 0.0


def label_face(photo: Photo, stored_width: int, location: dict[str, int],
               boxes: dict[str, list[tuple[tuple[int, int, int, int], str]]], face_id: str
               ) -> str:
    """The identity of a detected face: the labelled box it overlaps most (IoU > 0.3).

    A face matching no labelled box is a false detection and gets a label of its own.
    """
    scale = photo.width / stored_width if stored_width else 1.0
    box = tuple(round(location[k] * scale) for k in ("top", "right", "bottom", "left"))
    best, best_iou = f"unlabelled:{face_id}", 0.3
    for labelled, identity in boxes.get(photo.file, []):
        overlap = _iou(box, labelled)
        if overlap > best_iou:
            best, best_iou = identity, overlap
    return best


def upload_photos(client, photos: list[Photo], folder: Path = DEV_SET) -> dict[str, str]:
    """Upload through the API in the given order; returns face id -> identity label."""
    boxes = face_boxes(folder)
    labels: dict[str, str] = {}
    for photo in photos:
        data = (folder / photo.file).read_bytes()
        response = client.post("/images/upload", data={"file": (io.BytesIO(data), photo.file)},
                               content_type="multipart/form-data")
        assert response.status_code in (200, 201), (photo.file, response.json)
        result = response.json["data"]
        for face in result["faces"]:
            labels[face["face_id"]] = label_face(photo, result["width"], face["face_location"],
                                                 boxes, face["face_id"])
    return labels


def score_persons(client, labels: dict[str, str]) -> tuple[float, float, float, int]:
    """Pairwise precision, recall, F1 of the current persons, and how many persons exist."""
    predicted, truth = [], []
    for face_id, identity in labels.items():
        info = client.get(f"/faces/{face_id}/info").json["data"]
        predicted.append(info["person_id"])
        truth.append(identity)
    precision, recall, f1 = clustering.pairwise_scores(predicted, truth)
    return precision, recall, f1, len(set(predicted))
