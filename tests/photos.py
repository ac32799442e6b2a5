"""Test photos built in memory from real faces that ship inside installed packages.

No image file is committed. The two people:

* ``skimage.data.astronaut()``: Eileen Collins, 512x512. HOG (upsample 1) finds two boxes
  on the full picture: her face ``ASTRONAUT_FACE`` (score 1.16) and a false detection,
  ``ASTRONAUT_PATCH`` (score 0.12), the round STS-93 mission patch on her shoulder at the
  bottom left. :func:`astronaut_rgb` crops the patch away, so it holds exactly one face.
* matplotlib's ``sample_data/grace_hopper.jpg``: Grace Hopper, 512x600, one face.

Functions taking a ``Source`` accept encoded bytes, an RGB array or a Pillow image; the
photo builders return encoded bytes, as an upload would arrive.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
import struct
import typing as t
import zlib
from collections.abc import Sequence

import matplotlib
import numpy as np
import skimage.data
from PIL import Image
from PIL import ImageFilter
from PIL.ExifTags import GPS
from PIL.ExifTags import IFD
from PIL.ExifTags import Base

Source = bytes | np.ndarray | Image.Image

#: Eileen Collins' face in the full ``astronaut()`` picture (top, right, bottom, left).
ASTRONAUT_FACE = (76, 265, 166, 175)
#: HOG's false detection in the full ``astronaut()`` picture: the mission patch.
ASTRONAUT_PATCH = (335, 215, 425, 126)
#: Rows and columns of ``astronaut()`` kept by :func:`astronaut_rgb` (ends above the patch).
ASTRONAUT_CROP = (slice(0, 300), slice(40, 400))
#: Grace Hopper's face in ``grace_hopper.jpg`` (top, right, bottom, left).
HOPPER_FACE = (139, 366, 325, 180)
#: Left-to-right order of the people in :func:`group_photo`.
GROUP_ORDER = ("astronaut", "hopper")

# EXIF orientation -> the transpose that turns an upright picture into what the camera stored.
_STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _frozen(rgb: np.ndarray) -> np.ndarray:
    # Cached arrays are shared by every test: make accidental in-place edits fail loudly.
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    rgb.flags.writeable = False
    return rgb


@functools.cache
def astronaut_full_rgb() -> np.ndarray:
    """The whole ``astronaut()`` picture: one face plus the patch HOG mistakes for one."""
    return _frozen(skimage.data.astronaut())


@functools.cache
def astronaut_rgb() -> np.ndarray:
    """Eileen Collins, 360x300, exactly one face (box ``(76, 225, 166, 135)``)."""
    return _frozen(astronaut_full_rgb()[ASTRONAUT_CROP])


@functools.cache
def hopper_rgb() -> np.ndarray:
    """Grace Hopper, 512x600, one face."""
    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    with Image.open(path) as img:
        return _frozen(np.asarray(img.convert("RGB")))


@functools.cache
def blank_rgb() -> np.ndarray:
    """A 320x240 colour gradient with no face."""
    y, x = np.mgrid[0:240, 0:320]
    return _frozen(np.dstack([x * 255 // 319, y * 255 // 239, np.full_like(x, 128)]))


def image(src: Source) -> Image.Image:
    """A Pillow image from bytes, an array or an image."""
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, bytes):
        with Image.open(io.BytesIO(src)) as img:
            img.load()
            return img
    return Image.fromarray(np.asarray(src, dtype=np.uint8))


def rgb(src: Source) -> np.ndarray:
    """An RGB uint8 array (plain Pillow decode, no EXIF handling)."""
    return np.asarray(image(src).convert("RGB"))


def encode(src: Source, fmt: str = "JPEG", **params: t.Any) -> bytes:
    """Encode with Pillow; ``params`` go to ``Image.save``."""
    buffer = io.BytesIO()
    image(src).save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg(src: Source, quality: int = 92) -> bytes:
    """RGB JPEG bytes."""
    return encode(image(src).convert("RGB"), "JPEG", quality=quality)


@functools.cache
def astronaut_jpeg() -> bytes:
    """Eileen Collins, one face, JPEG."""
    return jpeg(astronaut_rgb())


@functools.cache
def hopper_jpeg() -> bytes:
    """Grace Hopper, one face, JPEG."""
    return jpeg(hopper_rgb())


@functools.cache
def blank_jpeg() -> bytes:
    """No face, JPEG."""
    return jpeg(blank_rgb())


@functools.cache
def group_photo() -> bytes:
    """Both people side by side, 300 px high, astronaut on the left; JPEG."""
    left = image(astronaut_rgb())
    right = image(hopper_rgb())
    right = right.resize((round(right.width * 300 / right.height), 300), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (left.width + 20 + right.width, 300), (90, 90, 90))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 20, 0))
    return jpeg(canvas)


def mirrored(src: Source) -> bytes:
    """Flipped left to right; JPEG."""
    return jpeg(image(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT))


def scaled(src: Source, factor: float) -> bytes:
    """Resized by ``factor``; JPEG."""
    img = image(src)
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    return jpeg(img.resize(size, Image.Resampling.LANCZOS))


def recompressed(src: Source, quality: int = 30) -> bytes:
    """Re-encoded as a low-quality JPEG."""
    return jpeg(src, quality=quality)


def blurred(src: Source, radius: float) -> bytes:
    """Gaussian-blurred; JPEG."""
    return jpeg(image(src).convert("RGB").filter(ImageFilter.GaussianBlur(radius)))


def as_png(src: Source, mode: str = "RGB") -> bytes:
    """PNG in ``mode``; ``"I;16"`` gives 16-bit grey (8-bit values times 257)."""
    img = image(src)
    if mode == "I;16":
        grey = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        return encode(Image.fromarray(grey), "PNG")
    return encode(img.convert(mode), "PNG")


def as_gif(src: Source) -> bytes:
    """A single-frame palette GIF."""
    return encode(image(src).convert("RGB").quantize(256), "GIF")


def as_webp(src: Source, *, lossless: bool = False) -> bytes:
    """WebP, lossy unless asked."""
    return encode(image(src).convert("RGB"), "WEBP", lossless=lossless, quality=90)


def as_jpeg(src: Source, mode: str = "RGB") -> bytes:
    """JPEG in ``mode``: ``"RGB"``, ``"L"`` or ``"CMYK"``."""
    return encode(image(src).convert(mode), "JPEG", quality=92)


def animated_gif(frames: Sequence[Source], duration: int = 100) -> bytes:
    """An animated GIF, ``duration`` ms per frame."""
    first, *rest = [image(frame).convert("RGB").quantize(256) for frame in frames]
    return encode(first, "GIF", save_all=True, append_images=rest, duration=duration, loop=0)


def transparent_png(src: Source, mode: str = "RGBA", border: int = 10) -> bytes:
    """PNG whose ``border``-pixel frame is fully transparent; mode ``"RGBA"``, ``"LA"`` or
    ``"P"`` (palette plus a transparent index)."""
    img = image(src).convert("RGB")
    alpha = Image.new("L", img.size, 0)
    alpha.paste(255, (border, border, img.width - border, img.height - border))
    if mode == "P":
        pal = img.quantize(255)  # index 255 stays free for the transparent colour
        pixels = np.asarray(pal).copy()
        pixels[np.asarray(alpha) == 0] = 255
        out = Image.fromarray(pixels, "P")
        palette = (pal.getpalette() or [])[: 255 * 3]
        out.putpalette(palette + [0] * (256 * 3 - len(palette)))
        return encode(out, "PNG", transparency=255)
    rgba = img.convert("RGBA")
    rgba.putalpha(alpha)
    return encode(rgba.convert(mode), "PNG")


def with_exif_orientation(src: Source, orientation: int, fmt: str = "JPEG") -> bytes:
    """Pixels stored turned, plus the EXIF Orientation that shows them upright again."""
    img = image(src).convert("RGB")
    if orientation in _STORED:
        img = img.transpose(_STORED[orientation])
    exif = Image.Exif()
    exif[Base.Orientation] = orientation
    return encode(img, fmt, exif=exif)


def with_exif(src: Source, *, taken_at: dt.datetime | str | None = None,
              make: str | None = None, model: str | None = None,
              gps: tuple[float, float, float | None] | None = None,
              size: tuple[int, int] | None = None, fmt: str = "JPEG") -> bytes:
    """Real EXIF: date (a string is written as is), camera, GPS (signed lat, lon, altitude),
    and the camera's pixel size."""
    exif = Image.Exif()
    sub: dict[int, t.Any] = {}
    if taken_at is not None:
        text = taken_at if isinstance(taken_at, str) else taken_at.strftime("%Y:%m:%d %H:%M:%S")
        sub[Base.DateTimeOriginal] = text
    if size is not None:
        sub[Base.ExifImageWidth], sub[Base.ExifImageHeight] = size
    if sub:
        exif[IFD.Exif] = sub
    if make is not None:
        exif[Base.Make] = make
    if model is not None:
        exif[Base.Model] = model
    if gps is not None:
        latitude, longitude, altitude = gps
        info: dict[int, t.Any] = {
            GPS.GPSLatitudeRef: "S" if latitude < 0 else "N",
            GPS.GPSLatitude: _dms(latitude),
            GPS.GPSLongitudeRef: "W" if longitude < 0 else "E",
            GPS.GPSLongitude: _dms(longitude),
        }
        if altitude is not None:
            info[GPS.GPSAltitudeRef] = b"\x01" if altitude < 0 else b"\x00"
            info[GPS.GPSAltitude] = abs(altitude)
        exif[IFD.GPSInfo] = info
    return encode(image(src).convert("RGB"), fmt, exif=exif)


def _dms(degrees: float) -> tuple[float, float, float]:
    degrees = abs(degrees)
    minutes = (degrees - int(degrees)) * 60
    return float(int(degrees)), float(int(minutes)), round((minutes - int(minutes)) * 60, 4)


def with_corrupt_exif(src: Source) -> bytes:
    """A JPEG whose APP1 Exif segment holds garbage instead of a TIFF structure."""
    data = jpeg(src)
    payload = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\xff\xff" + bytes(range(256)) * 2
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def pixel_bomb_png(side: int = 5000) -> bytes:
    """A real, all-black ``side`` x ``side`` palette PNG of a few kilobytes."""
    raw = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one byte per pixel
    idat = b"".join(raw.compress(row) for _ in range(side)) + raw.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 3, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"PLTE", b"\x00\x00\x00")
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


@functools.cache
def flat_png(width: int, height: int, colour: tuple[int, int, int] = (120, 130, 140)) -> bytes:
    """A real ``width`` x ``height`` RGB PNG of one colour, written a row at a time: 9400 x 9400
    is about 280 KB, and making it never holds its pixels (265 MB decoded)."""
    raw = zlib.compressobj()
    row = b"\x00" + bytes(colour) * width  # filter byte + the pixels
    idat = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def png_declaring_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height``: only a header check stops it."""
    data = encode(Image.new("L", (1, 1)), "PNG")
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    ihdr_end = 8 + 8 + 13 + 4
    return data[:8] + _chunk(b"IHDR", header) + data[ihdr_end:]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
