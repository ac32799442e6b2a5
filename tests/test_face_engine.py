"""services.face_engine with real dlib models on real faces (tests/photos.py); nothing is mocked."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest
from PIL import ImageFile

from services import face_engine
from services import imaging
from services.clustering import face_distances
from tests import photos

ALLOWED = {"jpg", "jpeg", "png", "gif", "webp"}
SAME_PERSON = 0.6  # face_recognition's usual tolerance


@pytest.fixture(scope="module")
def engine() -> face_engine.FaceEngine:
    engine = face_engine.FaceEngine()
    engine.load()
    return engine


@pytest.fixture(scope="module")
def astronaut(engine) -> face_engine.DetectedFace:
    (face,) = engine.analyse(photos.astronaut_rgb())
    return face


@pytest.fixture(scope="module")
def hopper(engine) -> face_engine.DetectedFace:
    (face,) = engine.analyse(photos.hopper_rgb())
    return face


def decoded(data: bytes) -> np.ndarray:
    return imaging.decode_upload(data, allowed_formats=ALLOWED).rgb


def iou(a: face_engine.Box, b: face_engine.Box) -> float:
    """Intersection over union of two (top, right, bottom, left) boxes."""
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[1], b[1]) - max(a[3], b[3])
    inter = max(height, 0) * max(width, 0)

    def area(box):
        return (box[2] - box[0]) * (box[1] - box[3])

    return inter / (area(a) + area(b) - inter)


def test_astronaut_face_is_found(astronaut):
    assert astronaut.box == (76, 225, 166, 135)
    assert astronaut.encoding.shape == (128,) and astronaut.encoding.dtype == np.float32
    assert astronaut.detector_score is not None and astronaut.detector_score > 1
    assert 0 < astronaut.quality <= 1


def test_hopper_face_is_found(hopper):
    assert hopper.box == photos.HOPPER_FACE
    assert 0 < hopper.quality <= 1


def test_full_astronaut_picture_has_the_known_false_detection(engine):
    # HOG also fires on the round mission patch on her shoulder: weakly, and left of her face.
    found = engine.analyse(photos.astronaut_full_rgb())
    assert [f.box for f in found] == [photos.ASTRONAUT_PATCH, photos.ASTRONAUT_FACE]
    patch, face = found
    assert patch.detector_score < 0.2 < 1 < face.detector_score
    assert face.quality > patch.quality


@pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning")
@pytest.mark.filterwarnings("ignore:Deprecated call to `pkg_resources:DeprecationWarning")
def test_matches_face_recognition_exactly(engine, monkeypatch):
    # face_recognition imports pkg_resources (setuptools<81) and quit()s without its models;
    # importing it also sets Pillow's LOAD_TRUNCATED_IMAGES process-wide: monkeypatch undoes it.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    face_recognition = importlib.import_module("face_recognition")
    pictures = [photos.astronaut_full_rgb(), photos.hopper_rgb(), photos.rgb(photos.group_photo())]
    for rgb in pictures:
        ours = [box for box, _ in engine.detect(rgb)]
        assert sorted(ours) == sorted(face_recognition.face_locations(rgb))
        # Our encodings use the 68-point landmarks: face_recognition's model="large".
        theirs = np.array(face_recognition.face_encodings(rgb, ours, model="large"))
        np.testing.assert_allclose(engine.encode(rgb, ours), theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", [
    lambda data: photos.mirrored(data),
    lambda data: photos.scaled(data, 0.6),
    lambda data: photos.recompressed(data, 25),
], ids=["mirrored", "scaled", "recompressed"])
def test_same_person_is_close_and_different_people_are_far(engine, astronaut, hopper, variant):
    for face, data in ((astronaut, photos.astronaut_jpeg()), (hopper, photos.hopper_jpeg())):
        (other,) = engine.analyse(decoded(variant(data)))
        assert face_distances([face.encoding], other.encoding)[0, 0] < SAME_PERSON
    assert face_distances([astronaut.encoding], hopper.encoding)[0, 0] > SAME_PERSON


def test_group_photo_faces_come_left_to_right(engine, astronaut, hopper):
    found = engine.analyse(decoded(photos.group_photo()))
    assert len(found) == 2
    assert found[0].box[3] < found[1].box[3]
    known = np.stack([astronaut.encoding, hopper.encoding])
    for face, who in zip(found, photos.GROUP_ORDER, strict=True):
        nearest = int(np.argmin(face_distances(known, face.encoding)))
        assert photos.GROUP_ORDER[nearest] == who


def test_blank_photo_has_no_face(engine):
    rgb = decoded(photos.blank_jpeg())
    assert engine.detect(rgb) == [] and engine.analyse(rgb) == []
    assert engine.encode(rgb, []).shape == (0, 128)


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_photo_is_found_after_decoding(engine, hopper, orientation):
    data = photos.with_exif_orientation(photos.hopper_rgb(), orientation)
    # HOG only finds upright faces: the stored pixels alone give nothing.
    assert engine.detect(photos.rgb(data)) == []
    (face,) = engine.analyse(decoded(data))
    assert iou(face.box, hopper.box) > 0.9


def test_quality_prefers_a_large_sharp_face(engine, hopper):
    (small_blurred,) = engine.analyse(decoded(photos.blurred(photos.scaled(
        photos.hopper_jpeg(), 0.4), 1.5)))
    assert hopper.quality > small_blurred.quality + 0.15
    rgb = photos.hopper_rgb()
    assert face_engine.quality_score(rgb, hopper.box, None) > face_engine.quality_score(
        decoded(photos.blurred(photos.hopper_jpeg(), 3)), hopper.box, None)
    assert face_engine.quality_score(rgb, (700, 900, 800, 800), 1.0) == 0.0


def test_detection_on_a_downscaled_copy_maps_boxes_back(engine, hopper):
    rgb = photos.hopper_rgb()
    (face,) = face_engine.FaceEngine(detection_max_dimension=300).analyse(rgb)
    assert iou(face.box, hopper.box) > 0.6
    assert abs(face.box[3] - hopper.box[3]) < 30 and abs(face.box[0] - hopper.box[0]) < 30
    # Landmarks and encoding still come from the full-resolution pixels.
    assert face_distances([hopper.encoding], face.encoding)[0, 0] < 0.1


def test_cnn_model_finds_the_face(astronaut):
    # The CNN takes ~1 s on this 288x240 picture on one CPU core (and ~20x HOG's time).
    rgb = decoded(photos.scaled(photos.astronaut_jpeg(), 0.8))
    (face,) = face_engine.FaceEngine(model="cnn").analyse(rgb)
    hog_box = tuple(round(v * 0.8) for v in astronaut.box)
    assert iou(face.box, hog_box) > 0.4
    assert face.detector_score is not None and face.detector_score > 0.5
    assert face_distances([astronaut.encoding], face.encoding)[0, 0] < SAME_PERSON


def test_engine_is_safe_to_share_between_threads(engine, hopper):
    results: list[list[face_engine.DetectedFace]] = []
    threads = [threading.Thread(target=lambda: results.append(engine.analyse(photos.hopper_rgb())))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    for (face,) in results:
        assert face.box == hopper.box
        np.testing.assert_array_equal(face.encoding, hopper.encoding)


@pytest.mark.parametrize("kwargs", [{"model": "yolo"}, {"upsample": -1}, {"num_jitters": 0},
                                    {"detection_max_dimension": 0}])
def test_engine_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        face_engine.FaceEngine(**kwargs)


def test_engine_wants_rgb_uint8(engine):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        engine.detect(np.zeros((50, 50), dtype=np.uint8))
    with pytest.raises(ValueError):
        engine.detect(np.zeros((50, 50, 3), dtype=np.float32))


@pytest.mark.parametrize(("longest", "upsample", "expected"), [
    (1920, 1, 1),   # a small photo keeps its doubling: faces down to ~40 px
    (2304, 1, 1),   # doubled, it is exactly the limit
    (2305, 1, 0),   # a 12 MP photo is scanned at full resolution, not doubled
    (4608, 1, 0),
    (1000, 2, 2),
    (1500, 2, 1),
    (1000, 0, 0),
])
def test_photos_are_doubled_only_while_they_stay_within_the_scan_size(longest, upsample,
                                                                      expected):
    assert face_engine.scan_upsample(longest, 4608, upsample) == expected
