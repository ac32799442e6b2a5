"""Image bytes in, RGB arrays out: decoding, EXIF, orientation, resizing, thumbnails, data URIs.

Pillow and numpy only. Every problem with uploaded bytes becomes a ``FileValidationError``;
arrays are ``HxWx3`` ``uint8`` RGB, the layout dlib expects.
"""

from __future__ import annotations

import hashlib
import io
import typing as t
import warnings
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

import errors
from services import budget
from services.exif import PILLOW_ERRORS
from services.exif import read_exif

__all__ = [
    "DISPLAY_TYPES",
    "WEB_FORMATS",
    "Box",
    "DecodedImage",
    "crop_box",
    "decode_upload",
    "encode_for_storage",
    "encode_jpeg",
    "limit_pixels",
    "make_thumbnail",
    "pillow_formats",
    "probe",
    "resize_to_fit",
    "working_copy",
]

Box = tuple[int, int, int, int]  # (top, right, bottom, left) like face_recognition
RGB = npt.NDArray[np.uint8]

#: The formats a browser shows; thumbnails are made only from these.
WEB_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP"})
#: MIME types every browser shows: a stored original of these types needs no display copy
#: unless it is larger than the display size.
DISPLAY_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

#: Bytes of pixels :func:`_to_array` copies at a time.
_BAND_BYTES = 4 * 2**20

# What Pillow's plugins raise on malformed input (an unknown format is an OSError subclass).
# Corrupt metadata is only a UserWarning, which arrives here as an exception where warnings
# are errors (as under pytest); elsewhere Pillow warns and carries on.
# EXIF orientation -> the transpose that shows the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """An upload decoded to upright RGB, with what we learnt from its bytes."""

    #: HxWx3 uint8, read-only; EXIF orientation applied, first frame only, alpha flattened
    #: onto white.
    rgb: RGB
    #: Pillow's format name: "JPEG", "PNG", "GIF" or "WEBP".
    format: str
    mime_type: str
    #: Size of ``rgb``, i.e. after orientation.
    width: int
    height: int
    #: Hex SHA-256 of the uploaded bytes.
    sha256: str
    #: See :func:`decode_upload`; ``{}`` when the file has no usable EXIF.
    exif: dict[str, t.Any]
    #: True when some pixel of the source was not fully opaque.
    has_alpha: bool


class _StrictReader(io.BytesIO):
    """Remembers whether a decoder asked for bytes past the end of the data."""

    # Pillow decodes truncated files silently once anything sets the process-wide
    # ImageFile.LOAD_TRUNCATED_IMAGES (importing face_recognition does), so we watch the reads.
    ran_out = False

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            self.ran_out = True
        return data


def pillow_formats(extensions: Collection[str]) -> frozenset[str]:
    """Map file extensions (``jpg``, ``.png``) to Pillow format names; ValueError if unknown."""
    registered = Image.registered_extensions()
    formats = set()
    for ext in extensions:
        name = registered.get("." + ext.lower().lstrip("."))
        if name is None:
            raise ValueError(f"unknown image extension: {ext!r}")
        formats.add(name)
    return frozenset(formats)


def decode_upload(data: bytes, *, allowed_formats: Collection[str],
                  max_pixels: int | None = None) -> DecodedImage:
    """Decode uploaded bytes; the type comes from the bytes, never from a filename.

    :param allowed_formats: lowercase extensions such as ``{"jpg", "png"}``.
    :param max_pixels: largest width*height accepted; defaults to Pillow's own limit.
    :raise FileValidationError: empty, not an image, truncated or corrupt, a format not
        allowed, or more pixels than ``max_pixels``.

    ``exif`` holds only the keys found: ``taken_at`` (naive datetime, None if unparsable),
    ``camera_make``, ``camera_model``, ``orientation``, ``gps`` (``latitude``, ``longitude``,
    ``altitude`` or None; south and west negative) and ``width``/``height`` as recorded by
    the camera.
    """
    img = _open_upload(data, allowed_formats, max_pixels)
    exif = read_exif(img)
    # A multi-picture JPEG (MPO, some cameras) is still a JPEG file to the user.
    fmt = "JPEG" if img.format == "MPO" else str(img.format)
    rgb_img, has_alpha = _to_rgb(img)
    # Each copy is dropped as soon as the next exists: a big photo is held twice at most.
    del img
    orientation = exif.get("orientation")
    if orientation in _UPRIGHT:
        rgb_img = rgb_img.transpose(_UPRIGHT[orientation])
    rgb = _to_array(rgb_img)
    del rgb_img
    return DecodedImage(rgb=rgb, format=fmt, mime_type=Image.MIME.get(fmt, "image/" + fmt.lower()),
                        width=rgb.shape[1], height=rgb.shape[0],
                        sha256=hashlib.sha256(data).hexdigest(), exif=exif, has_alpha=has_alpha)


def probe(data: bytes, *, allowed_formats: Collection[str],
          max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) from the header alone: nothing is decoded.

    :raise FileValidationError: as :func:`decode_upload` does for a file that is empty, not an
        image in an allowed format, or over ``max_pixels`` (default: Pillow's limit).
    """
    return _open_upload(data, allowed_formats, max_pixels, load=False).size


def _open_upload(data: bytes, allowed_formats: Collection[str], max_pixels: int | None, *,
                 load: bool = True) -> Image.Image:
    """The upload opened by Pillow: FileValidationError when empty, not an allowed format,
    or over ``max_pixels`` (default: Pillow's limit)."""
    allowed = sorted({ext.lower().lstrip(".") for ext in allowed_formats})
    if not data:
        raise errors.FileValidationError("The uploaded file is empty",
                                         details={"allowed_formats": allowed})
    if max_pixels is None:
        max_pixels = Image.MAX_IMAGE_PIXELS
    return _open(data, pillow_formats(allowed), max_pixels, allowed=allowed, load=load)


def limit_pixels(max_pixels: int) -> None:
    """Make ``max_pixels`` Pillow's own limit too, in this process.

    Pillow warns past ``Image.MAX_IMAGE_PIXELS`` (89 MP by default) and refuses twice that,
    whatever IMAGE_MAX_PIXELS says. With one limit, any image over it is refused by the first
    check that sees it, here or in Pillow (which then decodes nothing), and Pillow never refuses
    an image IMAGE_MAX_PIXELS allows.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    # Pillow's warning is our refusal: raised, it ends as the same FileValidationError.
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def _open(data: bytes, formats: Collection[str], max_pixels: int | None, *,
          allowed: Collection[str], draft: int | None = None, load: bool = True
          ) -> Image.Image:
    """Open the first frame and decode it (with ``load``), turning every failure into
    FileValidationError; the pixel limit is checked from the header, before any decoding."""
    names = ", ".join(allowed)
    reader = _StrictReader(data)
    try:
        # Only the allowed plugins ever parse untrusted bytes.
        img = Image.open(reader, formats=sorted(formats))
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise errors.FileValidationError(
                f"Image is too large: {width}x{height} pixels, at most {max_pixels} allowed",
                details={"width": width, "height": height, "max_pixels": max_pixels})
        if draft is not None:
            img.draft("RGB", (draft, draft))
        if load:
            img.load()
    except Image.UnidentifiedImageError as err:
        raise errors.FileValidationError(
            f"The file is not an image in an allowed format ({names})",
            details={"allowed_formats": list(allowed)}) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's check (in Image.open, from the header) spoke before ours.
        limit = max_pixels or Image.MAX_IMAGE_PIXELS
        raise errors.FileValidationError(
            f"Image is too large: more than {limit} pixels (possible decompression bomb)",
            details={"max_pixels": limit, "reason": str(err)}) from err
    except PILLOW_ERRORS as err:
        raise errors.FileValidationError("The image file is corrupt or unreadable",
                                         details={"reason": str(err)}) from err
    if load and reader.ran_out:
        raise errors.FileValidationError("The image file is truncated",
                                         details={"reason": "data ended before the image did"})
    return img


def _to_array(img: Image.Image) -> RGB:
    """An RGB image as an HxWx3 array, copied a band of rows at a time.

    ``np.asarray(img)`` goes through ``img.tobytes()``, which holds the pixels twice more (its
    chunks, then their join): 10 bytes a pixel at the peak with Pillow's own 4, where this
    needs 7 (docs/ingest.md, "Memory").
    """
    width, height = img.size
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _BAND_BYTES // (width * 3))
    for top in range(0, height, rows):
        band = img.crop((0, top, width, min(height, top + rows)))
        rgb[top:top + band.height] = np.asarray(band)
    return rgb


def _to_rgb(img: Image.Image) -> tuple[Image.Image, bool]:
    """Any Pillow mode to RGB, flattening transparency onto white; also says if it had any."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # Pillow's own I;16 -> RGB conversion clips at 255; keep the top 8 bits instead.
        arr = np.asarray(img)
        if mode != "F":
            arr = np.clip(arr, 0, 65535) >> 8
        grey = np.clip(arr, 0, 255).astype(np.uint8)
        return Image.fromarray(np.dstack([grey, grey, grey])), False
    if "A" in mode or "a" in mode or "transparency" in img.info:
        try:
            # convert() copies even to the same mode: 4 bytes a pixel saved on big RGBA photos.
            rgba = img if mode == "RGBA" else img.convert("RGBA")
        except ValueError as err:
            raise errors.FileValidationError(f"Unsupported colour mode {mode}") from err
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=alpha)
            return flat, True
        return rgba.convert("RGB"), False
    try:
        return (img if mode == "RGB" else img.convert("RGB")), False
    except ValueError as err:
        raise errors.FileValidationError(f"Unsupported colour mode {mode}") from err


def resize_to_fit(rgb: RGB, max_dimension: int) -> tuple[RGB, float]:
    """Shrink so the longer side is at most ``max_dimension``; returns (image, scale <= 1)."""
    if max_dimension < 1:
        raise ValueError("max_dimension must be positive")
    height, width = rgb.shape[:2]
    longest = max(height, width)
    if longest <= max_dimension:
        return rgb, 1.0
    scale = max_dimension / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap=3 shrinks in two steps: several times faster, indistinguishable output.
    small = Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(small, dtype=np.uint8), scale


def working_copy(data: bytes, image: DecodedImage, max_dimension: int) -> tuple[RGB, float]:
    """``resize_to_fit(image.rgb, max_dimension)``, the same size and scale, made cheaply.

    A JPEG at least twice the size asked for is decoded again at 1/2 to 1/8 scale (the
    decoder's own DCT scaling, draft mode) and only then fitted: a 12 MP photo takes about
    170 ms instead of 430 ms for a Lanczos fit of the full decode (docs/ingest.md).
    """
    height, width = image.rgb.shape[:2]
    longest = max(height, width)
    if image.format != "JPEG" or longest < 2 * max_dimension:
        return resize_to_fit(image.rgb, max_dimension)
    scale = max_dimension / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    img = Image.open(io.BytesIO(data), formats=["JPEG", "MPO"])
    turned = image.exif.get("orientation") in {5, 6, 7, 8}
    img.draft("RGB", (size[1], size[0]) if turned else size)
    flat, _ = _to_rgb(img)
    if image.exif.get("orientation") in _UPRIGHT:
        flat = flat.transpose(_UPRIGHT[image.exif["orientation"]])
    if flat.size != size:
        flat = flat.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(flat, dtype=np.uint8), scale


def encode_jpeg(rgb: RGB, quality: int) -> bytes:
    """Encode an RGB array as JPEG at ``quality`` (1-100; above 95 only grows the file)."""
    return _encode(Image.fromarray(rgb), "JPEG", quality=quality)


def encode_for_storage(image: DecodedImage, rgb: RGB, *, quality: int) -> tuple[bytes, str]:
    """Bytes and MIME type to keep: JPEG, or lossless PNG when the upload had transparency."""
    # The alpha is already flattened; PNG keeps the crisp edges such (usually drawn) images have.
    if image.has_alpha:
        return _encode(Image.fromarray(rgb), "PNG"), "image/png"
    return encode_jpeg(rgb, quality), "image/jpeg"


def _encode(img: Image.Image, fmt: str, **params: t.Any) -> bytes:
    if "quality" in params and not 1 <= params["quality"] <= 100:
        raise ValueError("JPEG quality must be 1-100")
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def make_thumbnail(data: bytes, size: int, *, quality: int = 85) -> bytes:
    """A JPEG fitting in ``size`` x ``size``, aspect kept, EXIF orientation applied."""
    if size < 1:
        raise ValueError("size must be positive")
    names = sorted(ext.lower() for ext in WEB_FORMATS)
    # draft() lets the JPEG decoder scale by 1/2..1/8 while decoding: big photos stay cheap.
    img = _open(data, WEB_FORMATS, Image.MAX_IMAGE_PIXELS, allowed=names, draft=size,
                load=False)
    # Display copies are small; an original (STORE_ORIGINALS) may not: the pixels decoded (after
    # draft) share the process's budget with uploads.
    with budget.for_process(Image.MAX_IMAGE_PIXELS).hold(img.size[0] * img.size[1]):
        img = _open(data, WEB_FORMATS, Image.MAX_IMAGE_PIXELS, allowed=names, draft=size)
        orientation = read_exif(img).get("orientation")
        flat, _ = _to_rgb(img)
        del img
        if orientation in _UPRIGHT:
            flat = flat.transpose(_UPRIGHT[orientation])
        flat.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        return _encode(flat, "JPEG", quality=quality)


def crop_box(rgb: RGB, box: Box, padding: float) -> RGB:
    """Copy of the box widened by ``padding`` times its height/width on each side, clipped."""
    top, right, bottom, left = box
    pad_y, pad_x = round((bottom - top) * padding), round((right - left) * padding)
    height, width = rgb.shape[:2]
    top, bottom = max(0, top - pad_y), min(height, bottom + pad_y)
    left, right = max(0, left - pad_x), min(width, right + pad_x)
    if top >= bottom or left >= right:
        raise ValueError(f"box {box} lies outside the {width}x{height} image")
    # A copy, so the crop does not keep the whole photo alive.
    return rgb[top:bottom, left:right].copy()
