"""The face engine: dlib detection, 68-point landmarks and 128-d encodings on RGB arrays.

dlib is called directly with face_recognition's models and recipe, so boxes and encodings
equal ``face_recognition.face_locations``/``face_encodings(..., model="large")``; we do not
import face_recognition itself because it loads every model at import and calls ``quit()``
when ``pkg_resources`` is missing. dlib types stop at this module's edge: boxes are plain
``(top, right, bottom, left)`` tuples, encodings numpy arrays. No Flask, no database.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import typing as t
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
import numpy.typing as npt
from PIL import Image

import errors
from services import imaging

__all__ = ["Box", "DetectedFace", "FaceEngine", "quality_score", "scan_upsample"]

log = logging.getLogger(__name__)

Box = imaging.Box  # (top, right, bottom, left), pixels, like face_recognition
Encodings = npt.NDArray[np.float32]

MODELS = ("hog", "cnn")
ENCODING_SIZE = 128

#: Files of the face_recognition_models package, by the role they play here.
MODEL_FILES = {
    "cnn": "mmod_human_face_detector.dat",
    "landmarks": "shape_predictor_68_face_landmarks.dat",
    "encoder": "dlib_face_recognition_resnet_model_v1.dat",
}

#: quality_score: a face this many pixels on its short side counts as full size.
FULL_SIZE_PX = 100
#: quality_score: faces are compared for sharpness at this size (a thumbnail's scale).
SHARPNESS_SIDE = 100
#: quality_score: Laplacian variance that scores 0.5 sharpness.
SHARPNESS_HALF = 300.0

# One copy of each model per process, loaded on first use; the lock stops two threads
# loading the same 100 MB file at once. dlib releases the GIL but its objects are not
# thread-safe (two threads in the HOG detector abort the process), so each model is used
# under its own lock (two threads on one detector measured no faster than one anyway).
_load_lock = threading.Lock()
_loaded: dict[str, t.Any] = {}
_use_locks = {name: threading.Lock() for name in ("hog", "cnn", "landmarks", "encoder")}


def _models_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ needs pkg_resources).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise errors.FaceRecognitionError(
            "The face models are not installed (pip install face-recognition-models)")
    return Path(spec.submodule_search_locations[0]) / "models"


def _model(name: str) -> t.Any:
    """The named dlib model, loaded once per process."""
    model = _loaded.get(name)
    if model is not None:
        return model
    with _load_lock:
        if name not in _loaded:
            if name == "hog":
                _loaded[name] = dlib.get_frontal_face_detector()
            else:
                path = str(_models_dir() / MODEL_FILES[name])
                loader = {"cnn": dlib.cnn_face_detection_model_v1,
                          "landmarks": dlib.shape_predictor,
                          "encoder": dlib.face_recognition_model_v1}[name]
                try:
                    _loaded[name] = loader(path)
                except RuntimeError as err:
                    raise errors.FaceRecognitionError(
                        f"Cannot load the face model {path}", details={"reason": str(err)}
                    ) from err
            log.info("loaded dlib model %s", name)
        return _loaded[name]


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face found in an image."""

    #: (top, right, bottom, left) in the pixel coordinates of the analysed image.
    box: Box
    #: (128,) float32; faces of one person lie within ~0.6 of each other.
    encoding: npt.NDArray[np.float32]
    #: 0..1, see :func:`quality_score`.
    quality: float
    #: HOG SVM score or CNN confidence; None when the box did not come from a detector.
    detector_score: float | None


class FaceEngine:
    """Detection and encoding settings; the models themselves are shared per process.

    :param model: ``"hog"`` (CPU-friendly) or ``"cnn"`` (more accurate, ~20x slower on CPU).
    :param upsample: times the image is doubled before detection; higher finds smaller faces
        and is ~4x slower per step.
    :param num_jitters: re-samples per encoding; higher is slightly more accurate, N x slower.
    :param detection_max_dimension: detect on a copy shrunk to this longer side (boxes are
        mapped back; landmarks and encodings use full resolution), doubling it ``upsample``
        times at most and only while it stays within this size (:func:`scan_upsample`).
        None detects at full size with ``upsample`` doublings.
    """

    def __init__(self, *, model: str = "hog", upsample: int = 1, num_jitters: int = 1,
                 detection_max_dimension: int | None = None) -> None:
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, not {model!r}")
        if upsample < 0 or num_jitters < 1:
            raise ValueError("upsample must be >= 0 and num_jitters >= 1")
        if detection_max_dimension is not None and detection_max_dimension < 1:
            raise ValueError("detection_max_dimension must be positive or None")
        self.model = model
        self.upsample = upsample
        self.num_jitters = num_jitters
        self.detection_max_dimension = detection_max_dimension

    def __repr__(self) -> str:
        return (f"FaceEngine(model={self.model!r}, upsample={self.upsample}, "
                f"num_jitters={self.num_jitters}, "
                f"detection_max_dimension={self.detection_max_dimension})")

    def load(self) -> None:
        """Load this engine's models now (e.g. in a worker at start) instead of on first use."""
        for name in (self.model, "landmarks", "encoder"):
            _model(name)

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[tuple[Box, float | None]]:
        """Face boxes (top, right, bottom, left) with detector scores, sorted left to right."""
        image = _dlib_image(rgb)
        small = image
        upsample = self.upsample
        if self.detection_max_dimension is not None:
            small, _ = imaging.resize_to_fit(image, self.detection_max_dimension)
            upsample = scan_upsample(max(small.shape[:2]), self.detection_max_dimension,
                                     self.upsample)
        detector = _model(self.model)
        try:
            with _use_locks[self.model]:
                if self.model == "hog":
                    # run() is what __call__ does (threshold 0.0), plus the scores.
                    rects, scores, _ = detector.run(small, upsample, 0.0)
                    found = list(zip(rects, scores, strict=True))
                else:
                    found = [(d.rect, d.confidence) for d in detector(small, upsample)]
        except RuntimeError as err:
            raise errors.FaceRecognitionError("Face detection failed",
                                              details={"reason": str(err)}) from err
        # Per-axis factors from the real sizes: rounding makes them differ slightly.
        scale_y, scale_x = image.shape[0] / small.shape[0], image.shape[1] / small.shape[1]
        faces = []
        for rect, score in found:
            box = _trim(rect.top(), rect.right(), rect.bottom(), rect.left(), small.shape)
            if small is not image:
                top, right, bottom, left = box
                box = _trim(round(top * scale_y), round(right * scale_x),
                            round(bottom * scale_y), round(left * scale_x), image.shape)
            if box[2] > box[0] and box[1] > box[3]:
                faces.append((box, float(score)))
        return sorted(faces, key=lambda face: (face[0][3], face[0][0]))

    def encode(self, rgb: npt.NDArray[np.uint8], boxes: Sequence[Box]) -> Encodings:
        """(n, 128) float32 encodings of the given boxes, from 68-point landmarks."""
        if not boxes:
            return np.empty((0, ENCODING_SIZE), dtype=np.float32)
        image = _dlib_image(rgb)
        predictor = _model("landmarks")
        encoder = _model("encoder")
        shapes = dlib.full_object_detections()
        try:
            with _use_locks["landmarks"]:
                for top, right, bottom, left in boxes:
                    rect = dlib.rectangle(int(left), int(top), int(right), int(bottom))
                    shapes.append(predictor(image, rect))
            # One batched call: same numbers as one call per face, less overhead.
            with _use_locks["encoder"]:
                vectors = encoder.compute_face_descriptor(image, shapes, self.num_jitters)
        except RuntimeError as err:
            raise errors.FaceRecognitionError("Face encoding failed",
                                              details={"reason": str(err)}) from err
        return np.array(vectors, dtype=np.float32).reshape(len(boxes), ENCODING_SIZE)

    def analyse(self, rgb: npt.NDArray[np.uint8]) -> list[DetectedFace]:
        """Detect, encode and score every face, left to right."""
        image = _dlib_image(rgb)
        found = self.detect(image)
        encodings = self.encode(image, [box for box, _ in found])
        return [DetectedFace(box=box, encoding=encoding,
                             quality=quality_score(image, box, score), detector_score=score)
                for (box, score), encoding in zip(found, encodings, strict=True)]


def scan_upsample(longest: int, max_dimension: int, upsample: int) -> int:
    """How many times to double an image whose longer side is ``longest`` before detection:
    at most ``upsample``, and only while the doubled image stays within ``max_dimension``.

    HOG finds faces from about 80 px at the scale it scans (40 px with one doubling): a photo
    scanned at full resolution keeps every face of 80 px or more, and doubling a large photo
    costs four times as much for faces that are already big enough (docs/ingest.md).
    """
    doublings = 0
    while doublings < upsample and longest * 2 ** (doublings + 1) <= max_dimension:
        doublings += 1
    return doublings


def _dlib_image(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    # dlib accepts only C-contiguous HxWx3 uint8 and fails obscurely on anything else.
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(rgb)


def _trim(top: int, right: int, bottom: int, left: int, shape: tuple[int, ...]) -> Box:
    """Clip a box to the image, exactly as face_recognition's ``_trim_css_to_bounds``."""
    return max(top, 0), min(right, shape[1]), min(bottom, shape[0]), max(left, 0)


def quality_score(rgb: npt.NDArray[np.uint8], box: Box, detector_score: float | None) -> float:
    """How good a thumbnail the face makes, 0..1.

    ``size = min(short side of box / FULL_SIZE_PX, 1)``;
    ``sharpness = v / (v + SHARPNESS_HALF)`` where ``v`` is the variance of the 4-neighbour
    Laplacian of the grey face resized to SHARPNESS_SIDE square (sharpness at thumbnail scale,
    so a small face blown up scores low too);
    ``detector = 1 - exp(-max(score, 0))`` (HOG scores run ~0..3, CNN confidences ~0..1.5).
    Result: the mean of the three terms, or of size and sharpness without a detector score.
    The detector term matters: textured non-faces (a badge, a print) are sharp but score low.
    """
    top, right, bottom, left = box
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, rgb.shape[0]), min(right, rgb.shape[1])
    if bottom <= top or right <= left:
        return 0.0
    size = min(min(bottom - top, right - left) / FULL_SIZE_PX, 1.0)
    grey = Image.fromarray(np.ascontiguousarray(rgb[top:bottom, left:right])).convert("L")
    grey = grey.resize((SHARPNESS_SIDE, SHARPNESS_SIDE), Image.Resampling.BILINEAR)
    g = np.asarray(grey, dtype=np.float32)
    laplacian = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    variance = float(laplacian.var())
    sharpness = variance / (variance + SHARPNESS_HALF)
    if detector_score is None:
        return (size + sharpness) / 2
    detector = 1.0 - math.exp(-max(detector_score, 0.0))
    return (size + sharpness + detector) / 3
