"""Photos larger than IMAGE_MAX_DIMENSION: faces are found on a shrunk copy, and every box the
API gives is in the pixels of the image it describes.

* Upload with STORE_ORIGINALS off: the shrunk copy is stored, boxes are in its pixels.
* Upload with it off: the original bytes are stored, boxes are in the original (upright) pixels.
* Search: boxes of the query's faces are in the query photo's own (upright) pixels.

A small IMAGE_MAX_DIMENSION keeps real dlib fast here. What is proven is image geometry: the
stand-in run leaves these out (their storage calls are an ordinary upload's and search's).
"""

from __future__ import annotations

import io
import typing as t

import pytest
from PIL import Image

from app import create_app
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import search
from tests.conftest import upload
from tests.invariants import check_invariants

pytestmark = pytest.mark.not_on_standin

MAX_DIMENSION = 300
SIDES = ("top", "right", "bottom", "left")


def hopper_x2() -> bytes:
    """Grace Hopper at twice the size: 1024x1200, four times IMAGE_MAX_DIMENSION high."""
    return photos.scaled(photos.hopper_rgb(), 2.0)


def hopper_x2_turned() -> bytes:
    """The same, stored turned a quarter with the EXIF orientation (6) that turns it back."""
    return photos.with_exif_orientation(photos.rgb(hopper_x2()), 6)


#: name -> (photo, upright size (width, height), the face box HOG finds at full size).
PHOTOS: dict[str, tuple[t.Callable[[], bytes], tuple[int, int], tuple[int, ...]]] = {
    "hopper_x2": (hopper_x2, (1024, 1200), tuple(2 * v for v in photos.HOPPER_FACE)),
    "hopper_x2_turned": (hopper_x2_turned, (1024, 1200), tuple(2 * v for v in photos.HOPPER_FACE)),
    # 360x300: shrunk by 5/6, so boxes scale back by 1.2, not by a whole number.
    "astronaut": (photos.astronaut_jpeg, (360, 300), (76, 225, 166, 135)),
}


def box(location: dict[str, int]) -> tuple[int, ...]:
    return tuple(location[side] for side in SIDES)


def iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Overlap of two (top, right, bottom, left) boxes: intersection over union."""
    height = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0, min(a[1], b[1]) - max(a[3], b[3]))
    inter = height * width
    area = (a[2] - a[0]) * (a[1] - a[3]) + (b[2] - b[0]) * (b[1] - b[3]) - inter
    return inter / area


def scaled_box(reference: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(round(v * factor) for v in reference)


@pytest.fixture(params=[True, False], ids=["compressed", "original"])
def compression(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.fixture
def small_client(store, compression):
    app = create_app({**BASE_CONFIG, "IMAGE_MAX_DIMENSION": MAX_DIMENSION,
                      "STORE_ORIGINALS": not compression}, store=store, environ={})
    with app.test_client() as client:
        yield client
    check_invariants(store)


@pytest.mark.parametrize("name", PHOTOS)
def test_upload_boxes_are_in_the_stored_images_pixels(small_client, compression, name):
    make, (width, height), reference = PHOTOS[name]
    data = make()
    result = upload(small_client, data, f"{name}.jpg")
    [face] = result["faces"]
    scale = MAX_DIMENSION / max(width, height)
    stored = (round(width * scale), round(height * scale)) if compression else (width, height)
    assert (result["width"], result["height"]) == stored

    file = small_client.get(f"/images/{result['image_id']}/file")
    assert file.status_code == 200
    if compression:
        assert file.mimetype == "image/jpeg"
        assert Image.open(io.BytesIO(file.data)).size == stored
    else:
        assert file.data == data  # the original bytes, EXIF orientation and all

    # The box is where the face is in the stored image's upright pixels.
    expected = scaled_box(reference, stored[0] / width)
    found = box(face["face_location"])
    assert iou(found, expected) > 0.6, (found, expected)
    assert 0 <= found[3] < found[1] <= stored[0] and 0 <= found[0] < found[2] <= stored[1]
    # Lists and the detail give the same box.
    detail = small_client.get(f"/images/{result['image_id']}").json["data"]
    assert (detail["width"], detail["height"]) == stored
    assert box(detail["faces"][0]["face_location"]) == found
    listed = small_client.get("/images/").json["data"]["images"][0]
    assert box(listed["faces"][0]["face_location"]) == found


@pytest.mark.parametrize("name", PHOTOS)
def test_search_boxes_are_in_the_query_photos_pixels(small_client, compression, name):
    make, (width, height), reference = PHOTOS[name]
    data = make()
    [face] = upload(small_client, data, f"{name}.jpg")["faces"]
    found = search(small_client, data)
    assert found["faces_in_query"] == 1
    [query_face] = found["query_faces"]
    [match] = found["matches"]
    assert match["face_id"] == face["face_id"] and match["distance"] < 0.01
    location = box(query_face["face_location"])
    assert box(match["query_face_location"]) == location
    assert iou(location, reference) > 0.6, (location, reference)
    # Upload and query detect faces on the same copy, so the stored box is the query's box
    # scaled into the stored image's pixels.
    scale = MAX_DIMENSION / max(width, height) if compression else 1.0
    assert box(face["face_location"]) == scaled_box(location, scale)


def test_a_large_query_finds_a_small_upload(small_client):
    """The same person uploaded small and searched large: one person, boxes in each photo."""
    [face] = upload(small_client, photos.hopper_jpeg())["faces"]
    found = search(small_client, hopper_x2())
    [match] = found["matches"]
    assert match["person_id"] == face["person_id"] and match["distance"] < 0.2
    reference = tuple(2 * v for v in photos.HOPPER_FACE)
    assert iou(box(match["query_face_location"]), reference) > 0.6
