"""EXIF metadata of an uploaded photo, as plain JSON- and BSON-friendly values.

Never raises on corrupt EXIF: a value that cannot be read is left out (or None for a date).
"""

from __future__ import annotations

import datetime as dt
import math
import struct
import typing as t

from PIL import Image
from PIL.ExifTags import GPS
from PIL.ExifTags import IFD
from PIL.ExifTags import Base

#: What Pillow raises on bad bytes (warnings included: tests turn them into errors).
PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                  struct.error, UserWarning, Image.DecompressionBombError,
                  Image.DecompressionBombWarning)
_EXIF_DATE_FORMATS = ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S")


def read_exif(img: Image.Image) -> dict[str, t.Any]:
    """The EXIF fields we keep, as plain JSON/BSON values; corrupt EXIF gives fewer keys."""
    try:
        exif = img.getexif()
        sub = exif.get_ifd(IFD.Exif)
        gps = exif.get_ifd(IFD.GPSInfo)
    except PILLOW_ERRORS:
        return {}
    found: dict[str, t.Any] = {}
    date = sub.get(Base.DateTimeOriginal, exif.get(Base.DateTime))
    if date is not None:
        found["taken_at"] = _exif_datetime(date)
    for key, tag in (("camera_make", Base.Make), ("camera_model", Base.Model)):
        text = _exif_text(exif.get(tag))
        if text:
            found[key] = text
    orientation = exif.get(Base.Orientation)
    if isinstance(orientation, int):
        found["orientation"] = int(orientation)
    position = _exif_gps(gps)
    if position is not None:
        found["gps"] = position
    width, height = sub.get(Base.ExifImageWidth), sub.get(Base.ExifImageHeight)
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        found["width"], found["height"] = int(width), int(height)
    return found


def _exif_text(value: t.Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "").strip() or None


def _exif_datetime(value: t.Any) -> dt.datetime | None:
    text = _exif_text(value)
    if text is None:
        return None
    for fmt in _EXIF_DATE_FORMATS:
        try:
            return dt.datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
    return None


def _exif_number(value: t.Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _exif_degrees(value: t.Any, ref: t.Any, negative: str, limit: float) -> float | None:
    """Degrees/minutes/seconds rationals to signed decimal degrees."""
    parts = value if isinstance(value, tuple) else (value,)
    numbers = [_exif_number(part) for part in parts[:3]]
    if not numbers or any(n is None for n in numbers):
        return None
    degrees = sum(n / 60**i for i, n in enumerate(t.cast(list[float], numbers)))
    if _exif_text(ref) in (negative, negative.lower()):
        degrees = -degrees
    return degrees if abs(degrees) <= limit else None


def _exif_gps(gps: dict[int, t.Any]) -> dict[str, float | None] | None:
    latitude = _exif_degrees(gps.get(GPS.GPSLatitude), gps.get(GPS.GPSLatitudeRef), "S", 90)
    longitude = _exif_degrees(gps.get(GPS.GPSLongitude), gps.get(GPS.GPSLongitudeRef), "W", 180)
    if latitude is None or longitude is None:
        return None
    altitude = _exif_number(gps.get(GPS.GPSAltitude))
    # AltitudeRef 1 means below sea level; writers store it as a byte or an int.
    if altitude is not None and gps.get(GPS.GPSAltitudeRef) in (1, b"\x01"):
        altitude = -altitude
    return {"latitude": latitude, "longitude": longitude, "altitude": altitude}
