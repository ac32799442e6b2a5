"""services.imaging on real photos built in memory (tests/photos.py): decoding, EXIF, resizing."""

from __future__ import annotations

import datetime as dt
import io
import random

import numpy as np
import pytest
from PIL import Image
from PIL import ImageFile

import errors
from services import imaging
from tests import photos

ALLOWED = {"png", "jpg", "jpeg", "gif", "webp"}
UPRIGHT = photos.astronaut_rgb()


def decode(data: bytes, **kwargs) -> imaging.DecodedImage:
    return imaging.decode_upload(data, allowed_formats=ALLOWED, **kwargs)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize(("build", "fmt", "mime"), [
    (photos.jpeg, "JPEG", "image/jpeg"),
    (photos.as_png, "PNG", "image/png"),
    (photos.as_gif, "GIF", "image/gif"),
    (photos.as_webp, "WEBP", "image/webp"),
    (lambda src: photos.as_webp(src, lossless=True), "WEBP", "image/webp"),
])
def test_every_allowed_format_decodes(build, fmt, mime):
    data = build(UPRIGHT)
    image = decode(data)
    assert (image.format, image.mime_type) == (fmt, mime)
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == UPRIGHT.shape
    assert (image.width, image.height) == (360, 300)
    assert mean_difference(image.rgb, UPRIGHT) < 12
    assert image.exif == {} and image.has_alpha is False
    assert len(image.sha256) == 64


def test_type_comes_from_the_bytes_not_the_name():
    # Only PNG allowed: JPEG bytes fail whatever the client called the file.
    with pytest.raises(errors.FileValidationError, match="allowed format.*png"):
        imaging.decode_upload(photos.astronaut_jpeg(), allowed_formats={"png"})
    assert imaging.decode_upload(photos.as_png(UPRIGHT), allowed_formats={"PNG"}).format == "PNG"


@pytest.mark.parametrize("data", [
    b"",
    b"just some text, saved as holiday.jpg\n" * 20,
    b"\xff\xd8\xff",
    b"<svg xmlns='http://www.w3.org/2000/svg'/>",
], ids=["empty", "text", "jpeg-magic-only", "svg"])
def test_non_images_are_rejected(data):
    with pytest.raises(errors.FileValidationError) as caught:
        decode(data)
    assert caught.value.code == 400 and caught.value.message


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "PPM", "ICO"])
def test_formats_not_allowed_are_rejected(fmt):
    data = photos.encode(photos.image(UPRIGHT).resize((64, 54)), fmt)
    with pytest.raises(errors.FileValidationError, match="jpeg, jpg, png, webp"):
        decode(data)


@pytest.mark.parametrize("build", [photos.jpeg, photos.as_png, photos.as_gif, photos.as_webp])
@pytest.mark.parametrize("lenient_pillow", [False, True])
def test_truncated_images_are_rejected(build, lenient_pillow, monkeypatch):
    # Importing face_recognition sets this process-wide flag; decoding must not depend on it.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient_pillow)
    data = build(UPRIGHT)
    with pytest.raises(errors.FileValidationError):
        decode(data[: len(data) * 2 // 3])


def test_pixel_bomb_is_rejected_before_decoding():
    bomb = photos.pixel_bomb_png(5000)  # 25 megapixels in 24 KB
    assert len(bomb) < 50_000
    with pytest.raises(errors.FileValidationError, match="too large") as caught:
        decode(bomb, max_pixels=4_000_000)
    assert caught.value.details == {"width": 5000, "height": 5000, "max_pixels": 4_000_000}


def test_header_claiming_huge_size_hits_pillows_bomb_limit():
    with pytest.raises(errors.FileValidationError, match="too many pixels|too large"):
        decode(photos.png_declaring_size(40_000, 40_000))


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_jpeg_colour_modes_become_rgb(mode):
    image = decode(photos.as_jpeg(UPRIGHT, mode))
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == UPRIGHT.shape
    if mode == "L":
        assert (image.rgb[..., 0] == image.rgb[..., 2]).all()
    else:
        # CMYK JPEGs are stored inverted by some writers; colours must come back right.
        assert mean_difference(image.rgb, UPRIGHT) < 12


def test_sixteen_bit_png_keeps_its_top_byte():
    image = decode(photos.as_png(UPRIGHT, "I;16"))
    grey = np.asarray(photos.image(UPRIGHT).convert("L"))
    assert image.rgb.dtype == np.uint8
    assert (image.rgb[..., 1] == grey).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_flattened_onto_white(mode):
    image = decode(photos.transparent_png(UPRIGHT, mode, border=10))
    assert image.has_alpha is True
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == UPRIGHT.shape
    assert (image.rgb[:10] == 255).all() and (image.rgb[:, -10:] == 255).all()
    assert image.rgb[150, 180].tolist() != [255, 255, 255]


def test_opaque_alpha_is_not_transparency():
    image = decode(photos.as_png(UPRIGHT, "RGBA"))
    assert image.has_alpha is False
    assert (image.rgb == UPRIGHT).all()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
    data = photos.with_exif_orientation(UPRIGHT, orientation)
    stored = photos.image(data).size
    assert stored == ((300, 360) if orientation >= 5 else (360, 300))
    image = decode(data)
    assert (image.width, image.height) == (360, 300)
    assert image.exif == {"orientation": orientation}
    assert mean_difference(image.rgb, UPRIGHT) < 6


@pytest.mark.parametrize(("gps", "expected"), [
    ((-33.8568, 151.2153, 58.0), (-33.8568, 151.2153, 58.0)),  # south, east
    ((40.6892, -74.0445, None), (40.6892, -74.0445, None)),  # north, west, no altitude
    ((-0.5, -78.25, -12.5), (-0.5, -78.25, -12.5)),  # below sea level
])
def test_exif_fields_are_extracted(gps, expected):
    data = photos.with_exif(UPRIGHT, taken_at=dt.datetime(2021, 5, 6, 7, 8, 9),
                            make="  Canon\x00", model="EOS 5D ", gps=gps, size=(4000, 3000))
    exif = decode(data).exif
    position = exif.pop("gps")
    assert exif == {"taken_at": dt.datetime(2021, 5, 6, 7, 8, 9), "camera_make": "Canon",
                    "camera_model": "EOS 5D", "width": 4000, "height": 3000}
    latitude, longitude, altitude = expected
    assert position["latitude"] == pytest.approx(latitude, abs=1e-5)
    assert position["longitude"] == pytest.approx(longitude, abs=1e-5)
    assert position["altitude"] == (None if altitude is None else pytest.approx(altitude))
    assert all(type(v) in (float, type(None)) for v in position.values())


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_exif_is_read_from_png_and_webp(fmt):
    data = photos.with_exif(UPRIGHT, make="Nikon", fmt=fmt)
    assert decode(data).exif == {"camera_make": "Nikon"}


def test_unparsable_date_becomes_none():
    data = photos.with_exif(UPRIGHT, taken_at="0000:00:00 00:00:00", model="X100")
    assert decode(data).exif == {"taken_at": None, "camera_model": "X100"}


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
def test_corrupt_exif_does_not_fail_the_upload():
    # Pillow warns about the garbage (ignored here, as it is outside tests) and carries on.
    image = decode(photos.with_corrupt_exif(UPRIGHT))
    assert image.rgb.shape == UPRIGHT.shape
    assert isinstance(image.exif, dict)


def test_exif_values_are_plain_json_or_bson_types():
    plain = (str, int, float, dt.datetime, type(None))

    def check(value):
        if isinstance(value, dict):
            assert all(isinstance(k, str) and check(v) is None for k, v in value.items())
        else:
            assert type(value) in plain, type(value)

    check(decode(photos.with_exif(UPRIGHT, taken_at="2020:02:29 23:59:59", make="A",
                                  model="B", gps=(1.5, -2.5, 3.0), size=(8, 6))).exif)


def test_animated_gif_gives_its_first_frame():
    second = np.full_like(UPRIGHT, (0, 200, 0))
    image = decode(photos.animated_gif([UPRIGHT, second]))
    assert image.format == "GIF" and image.rgb.shape == UPRIGHT.shape
    assert mean_difference(image.rgb, UPRIGHT) < 12
    assert mean_difference(image.rgb, second) > 30


def test_corrupted_bytes_only_ever_raise_file_validation_error():
    # A seeded fuzz: any failure inside Pillow must surface as a 400, never as a 500.
    rng = random.Random(20)
    small = photos.scaled(photos.astronaut_jpeg(), 0.3)
    sources = [small, photos.as_png(small), photos.as_gif(small), photos.as_webp(small),
               photos.with_exif(small, taken_at="2020:01:01 00:00:00", gps=(1.0, 2.0, 3.0))]
    for source in sources:
        for _ in range(60):
            data = bytearray(source)
            # Half the time hit the first 200 bytes: headers, chunk lengths, EXIF offsets.
            end = rng.choice([200, len(data)])
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(end)] = rng.randrange(256)
            try:
                decode(bytes(data))
            except errors.FileValidationError:
                pass


def test_resize_to_fit_shrinks_but_never_enlarges():
    resized, scale = imaging.resize_to_fit(UPRIGHT, 180)
    assert resized.shape == (150, 180, 3) and scale == 0.5 and resized.dtype == np.uint8
    same, scale = imaging.resize_to_fit(UPRIGHT, 360)
    assert same is UPRIGHT and scale == 1.0
    with pytest.raises(ValueError):
        imaging.resize_to_fit(UPRIGHT, 0)


@pytest.mark.parametrize("source", [photos.hopper_jpeg, lambda: photos.transparent_png(UPRIGHT)])
def test_thumbnail_is_a_jpeg_inside_the_square(source):
    thumbnail = imaging.make_thumbnail(source(), 100)
    with Image.open(io.BytesIO(thumbnail)) as img:
        assert img.format == "JPEG" and max(img.size) == 100


def test_thumbnail_keeps_aspect_and_orientation():
    thumbnail = imaging.make_thumbnail(photos.with_exif_orientation(UPRIGHT, 6), 120)
    with Image.open(io.BytesIO(thumbnail)) as img:
        assert img.size == (120, 100)


def test_thumbnail_of_bad_bytes_is_a_validation_error():
    with pytest.raises(errors.FileValidationError):
        imaging.make_thumbnail(b"not an image", 100)


def test_encode_for_storage_keeps_png_only_for_transparent_uploads():
    opaque = decode(photos.astronaut_jpeg())
    data, mime = imaging.encode_for_storage(opaque, opaque.rgb, quality=85)
    assert mime == "image/jpeg" and data[:2] == b"\xff\xd8"
    transparent = decode(photos.transparent_png(UPRIGHT))
    data, mime = imaging.encode_for_storage(transparent, transparent.rgb, quality=85)
    assert mime == "image/png" and data[:4] == b"\x89PNG"
    assert (decode(data).rgb == transparent.rgb).all()


def test_encode_jpeg_checks_quality():
    assert decode(imaging.encode_jpeg(UPRIGHT, 90)).rgb.shape == UPRIGHT.shape
    with pytest.raises(ValueError):
        imaging.encode_jpeg(UPRIGHT, 0)


def test_crop_box_pads_and_clips():
    box = (76, 225, 166, 135)  # the astronaut's face: 90 x 90
    assert imaging.crop_box(UPRIGHT, box, 0.0).shape == (90, 90, 3)
    assert imaging.crop_box(UPRIGHT, box, 0.5).shape == (180, 180, 3)
    # Near the top edge the padding is cut off by the image.
    assert imaging.crop_box(UPRIGHT, box, 1.0).shape == (166 + 90, 270, 3)
    with pytest.raises(ValueError):
        imaging.crop_box(UPRIGHT, (400, 500, 450, 450), 0.2)


def test_unknown_extension_is_a_programming_error():
    assert imaging.pillow_formats({"jpg", ".JPEG", "png"}) == {"JPEG", "PNG"}
    with pytest.raises(ValueError):
        imaging.pillow_formats({"heic-nope"})


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_the_working_copy_of_a_large_jpeg_matches_a_fit_of_the_full_decode(orientation):
    data = photos.with_exif_orientation(photos.scaled(UPRIGHT, 4.0), orientation)
    full = decode(data)
    expected, expected_scale = imaging.resize_to_fit(full.rgb, 300)
    work, scale = imaging.working_copy(data, full, 300)
    assert work.shape == expected.shape and scale == expected_scale
    assert mean_difference(work, expected) < 6  # the same picture, upright
    small, same = imaging.working_copy(data, full, 10_000)  # nothing to shrink
    assert same == 1.0 and small.shape == full.rgb.shape
