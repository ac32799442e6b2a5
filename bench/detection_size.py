"""Benchmark: at what size, and with what upsampling, to run HOG face detection on 12 MP photos.

The reference is the naive path: HOG on the full-resolution photo with 1 upsample
(face_recognition's ``face_locations`` default). It is slow (~3 s a 12 MP photo), so its boxes
and time are cached as JSON in the photo-set folder (``--refresh`` re-runs it). Full
resolution with 0 upsamples (its ``face_detection`` CLI) and every candidate below are timed in
this run, one process, one photo at a time, on the photos of ``bench/photosets.py`` (and the
original dev photos with ``--dev``):

* ``S uN``: the photo shrunk to fit S px (``imaging.resize_to_fit``, Lanczos, what
  ``FaceEngine(detection_max_dimension=S)`` does) and detected with N upsamples (3072 px
  too, without upsampling: where does shrinking start to cost faces?); ``S u0 draft``: the
  same from a JPEG decoded at 1/2 or 1/4 size (Pillow ``draft``), then fitted to S;
* ``tiles T/O ...``: T px tiles overlapping by O px, each detected alone, plus a coarse pass
  for the faces too big to fit inside a tile's overlap; boxes merged by non-maximum
  suppression;
* ``A > B small``: a second look. Pass 1 is setting A (0 upsamples); setting B runs only when
  pass 1 found no face or a face under twice the smallest it can see (the photo seems to hold
  faces at the edge of what pass 1 sees), and then its boxes replace pass 1's. Composed from
  the single-pass timings of this run;
* ``scan<=4608``: the photo fitted to 4608 px, upsampled once only if that stays within
  4608 px (so <= 2304 px photos get 1 upsample, 12 MP photos none at full resolution).

Times are CPU milliseconds of this process (``time.process_time``): the machine is shared,
and wall clocks there measure the neighbours. Each row's cost runs from the JPEG bytes to the
boxes: decode (+ fit) + HOG. A box matches a reference box when IoU >= 0.3 (one to one, best
pairs first), both in full-resolution pixels. Lost faces are split by the reference box's
shorter side (< 80 px or >= 80 px); extra faces are boxes with no reference box. ``truth``
counts the photo sets' labelled faces found. The encoding check encodes every matched >= 80 px
face on the 1920 px working image from both boxes and reports the distance between the two.

    python -m bench.detection_size [--cache DIR] [--dev] [--refresh] [--encodings A,B]
                                   [--quick] [--tiles]

``--quick`` keeps the S x N grid, the second looks and the proposed rule (no 3072 px, draft
detections or encoding check); tiles, which cost 2.4x full-resolution u0 for the same faces,
run only with ``--tiles``. First run: ~3 min more for the references.

Prints tables only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import dlib
import numpy as np
import numpy.typing as npt
from PIL import Image

from bench import photosets
from services import face_engine
from services import imaging
from tests import devset

RGB = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]  # (top, right, bottom, left), full-resolution pixels

SIZES = (1024, 1280, 1536, 1920, 2048, 2560)
UPSAMPLES = (0, 1)
#: Just under full size, without upsampling: where does shrinking start to cost faces?
LARGE_U0_SIZES = (3072,)
DRAFT_SIZES = (1024, 1920)  # detection on draft decodes (u0): enough to see what it changes
WORK_SIZE = 1920  # IMAGE_MAX_DIMENSION: landmarks, encodings and crops use this image
SMALL_FACE = 80  # the split of lost faces, px at full resolution
MATCH_IOU = 0.3
#: Box side HOG reports for its 80x80 window at scale 1 (its boxes at one upsample come in
#: steps of 1.2 from 43 px, so 86 px without): pass 1 of a second look cannot see faces under
#: about this times its shrink factor.
HOG_MIN_BOX = 86
SECOND_LOOK_MARGIN = 2.0
TILE_PLAN = (1536, 256, 1536)  # tile, overlap, coarse pass size (tiles at 0 upsamples)
TWO_PASS = (("1024 u0 draft", "full u0"), ("1536 u0", "full u0"), ("1024 u0", "2048 u1"),
            ("2048 u0", "2048 u1"))
SCAN_MAX = 4608
SCAN = f"scan<={SCAN_MAX}"
DEFAULT_ENCODINGS = ("full u0",)


def _clock() -> float:
    return time.process_time()


def _ms(start: float) -> float:
    return (_clock() - start) * 1000


@dataclass
class Found:
    """Boxes of one setting on one photo, in full-resolution pixels, and what they cost."""

    boxes: list[Box]
    scores: list[float]
    prep_ms: float  # decoding the JPEG and fitting it to the detection size
    hog_ms: float
    note: str = ""

    @property
    def ms(self) -> float:
        return self.prep_ms + self.hog_ms


@dataclass
class Photo:
    set: str
    name: str
    path: Path
    truth: list[Box]
    width: int = 0
    height: int = 0
    results: dict[str, Found] = field(default_factory=dict)
    decode_ms: dict[str, float] = field(default_factory=dict)


def _hog(rgb: RGB, upsample: int) -> tuple[list[Box], list[float], float]:
    """Boxes in ``rgb``'s pixels, trimmed as FaceEngine.detect trims them, and the HOG ms."""
    detector = face_engine._model("hog")  # the engine's own detector object
    start = _clock()
    rects, scores, _ = detector.run(rgb, upsample, 0.0)
    ms = _ms(start)
    h, w = rgb.shape[:2]
    boxes = [(max(r.top(), 0), min(r.right(), w), min(r.bottom(), h), max(r.left(), 0))
             for r in rects]
    return boxes, [float(s) for s in scores], ms


def _map(boxes: Sequence[Box], small: tuple[int, ...], full: tuple[int, ...]) -> list[Box]:
    """From a resized copy back to full resolution, as FaceEngine.detect maps."""
    sy, sx = full[0] / small[0], full[1] / small[1]
    return [(max(round(top * sy), 0), min(round(right * sx), full[1]),
             min(round(bottom * sy), full[0]), max(round(left * sx), 0))
            for top, right, bottom, left in boxes]


def _detect(rgb_full: RGB, small: RGB, upsample: int, prep_ms: float, note: str = "") -> Found:
    boxes, scores, ms = _hog(small, upsample)
    return Found(_map(boxes, small.shape, rgb_full.shape), scores, prep_ms, ms, note)


def _overlap(a: Box, b: Box) -> tuple[float, float, float]:
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[1], b[1]) - max(a[3], b[3])
    inter = max(height, 0) * max(width, 0)
    return inter, (a[2] - a[0]) * (a[1] - a[3]), (b[2] - b[0]) * (b[1] - b[3])


def iou(a: Box, b: Box) -> float:
    inter, area_a, area_b = _overlap(a, b)
    union = area_a + area_b - inter
    return inter / union if union else 0.0


def _inside(a: Box, b: Box) -> float:
    """Share of the smaller box covered by the other: a face cut by a tile edge is inside."""
    inter, area_a, area_b = _overlap(a, b)
    small = min(area_a, area_b)
    return inter / small if small else 0.0


def match(reference: Sequence[Box], found: Sequence[Box]) -> dict[int, tuple[int, float]]:
    """reference index -> (found index, IoU), one to one, best pairs first, IoU >= 0.3."""
    pairs = sorted(((iou(r, f), i, j) for i, r in enumerate(reference)
                    for j, f in enumerate(found)), reverse=True)
    used_r: dict[int, tuple[int, float]] = {}
    used_f: set[int] = set()
    for value, i, j in pairs:
        if value < MATCH_IOU:
            break
        if i not in used_r and j not in used_f:
            used_r[i] = (j, value)
            used_f.add(j)
    return used_r


def side(box: Box) -> int:
    return min(box[2] - box[0], box[1] - box[3])


def _nms(boxes: list[Box], scores: list[float]) -> tuple[list[Box], list[float]]:
    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[k]) < MATCH_IOU and _inside(boxes[i], boxes[k]) < 0.6
               for k in kept):
            kept.append(i)
    return [boxes[i] for i in kept], [scores[i] for i in kept]


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    count = -(-(length - overlap) // (tile - overlap))
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def _tiles(rgb: RGB, tile: int, overlap: int, coarse: Found) -> Found:
    boxes, scores, hog_ms = list(coarse.boxes), list(coarse.scores), coarse.hog_ms
    count = 0
    for y in _starts(rgb.shape[0], tile, overlap):
        for x in _starts(rgb.shape[1], tile, overlap):
            # dlib wants C-contiguous pixels; the copy is timed with the detection.
            start = _clock()
            part = np.ascontiguousarray(rgb[y:y + tile, x:x + tile])
            copy_ms = _ms(start)
            found, found_scores, ms = _hog(part, 0)
            hog_ms += ms + copy_ms
            count += 1
            boxes += [(t + y, r + x, b + y, left + x) for t, r, b, left in found]
            scores += found_scores
    boxes, scores = _nms(boxes, scores)
    return Found(boxes, scores, coarse.prep_ms, hog_ms, f"{count} tiles")


def _second_look(first: Found, second: Found, first_scale: float, extra_prep_ms: float
                 ) -> Found:
    limit = HOG_MIN_BOX / first_scale
    small = not first.boxes or min(side(b) for b in first.boxes) < SECOND_LOOK_MARGIN * limit
    if not small:
        return Found(first.boxes, first.scores, first.prep_ms, first.hog_ms, "1 pass")
    return Found(second.boxes, second.scores, first.prep_ms + extra_prep_ms,
                 first.hog_ms + second.hog_ms, "2 passes")


def _decode(data: bytes, fit: tuple[int, int] | None = None) -> RGB:
    """RGB as services.images decodes it; with ``fit``, JPEG draft to at least that size."""
    img = Image.open(io.BytesIO(data))
    if fit is not None:
        # draft() picks the largest 1/2, 1/4, 1/8 scale that stays at or above the size
        # given on both axes: pass the fitted size, not (S, S), or a 4:3 photo is never
        # reduced (3000 // 1920 == 1).
        img.draft("RGB", fit)
    img.load()
    return np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def _fit(width: int, height: int, size: int) -> tuple[int, int]:
    scale = min(size / max(width, height), 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _median_ms(fn: Callable[[], RGB], repeat: int = 3) -> tuple[float, RGB]:
    times, out = [], None
    for _ in range(repeat):
        start = _clock()
        out = fn()
        times.append(_ms(start))
    assert out is not None
    return statistics.median(times), out


# --- full-resolution references, cached --------------------------------------------------


def references(photos: list[Photo], cache_file: Path) -> int:
    """Full-resolution u1 results into ``photo.results``; how many were computed."""
    cache: dict = {}
    if cache_file.exists():
        cache = json.loads(cache_file.read_text())
        if cache.get("dlib") != dlib.__version__:
            cache = {}
    entries = cache.setdefault("entries", {})
    cache["dlib"] = dlib.__version__
    computed = 0
    for photo in photos:
        data = photo.path.read_bytes()
        key = f"{photo.name}:{hashlib.sha256(data).hexdigest()[:20]}"
        entry = entries.get(key)
        if entry is None:
            rgb = _decode(data)
            boxes, scores, ms = _hog(rgb, 1)
            entry = {"u1": {"boxes": boxes, "scores": scores, "ms": ms,
                            "when": time.strftime("%Y-%m-%d %H:%M")}}
            entries[key] = entry
            computed += 1
            # Written after every photo: an interrupted first run keeps what it paid for.
            cache_file.write_text(json.dumps(cache))
        ref = entry["u1"]
        # prep_ms (the decode) is filled in by run_photo, timed in this run.
        photo.results["full u1"] = Found([tuple(b) for b in ref["boxes"]], ref["scores"], 0.0,
                                         ref["ms"], f"cached {ref['when']}")
    return computed


# --- the candidates ------------------------------------------------------------------------


def run_photo(photo: Photo, *, variants: bool, tiles: bool = False) -> RGB:
    """Every candidate on one photo (decode timings too); returns the full-size RGB."""
    data = photo.path.read_bytes()
    full_ms, rgb = _median_ms(lambda: _decode(data))
    photo.height, photo.width = rgb.shape[:2]
    photo.decode_ms["full"] = full_ms
    photo.results["full u1"].prep_ms = full_ms
    photo.results["full u0"] = _detect(rgb, rgb, 0, full_ms)
    long_side = max(photo.width, photo.height)
    jpeg = data[:2] == b"\xff\xd8"
    plan = [(size, u) for size in SIZES for u in UPSAMPLES]
    if variants:
        plan += [(size, 0) for size in LARGE_U0_SIZES]
    shrunk: dict[int, tuple[RGB, float]] = {}
    for size, upsample in plan:
        name = f"{size} u{upsample}"
        if size >= long_side:
            # Nothing to shrink: exactly the full-size computation, so not run twice.
            photo.results[name] = photo.results[f"full u{upsample}"]
            continue
        if size not in shrunk:
            start = _clock()
            small, _ = imaging.resize_to_fit(rgb, size)
            shrunk[size] = small, _ms(start)
            photo.decode_ms[f"resize {size}"] = shrunk[size][1]
        small, resize_ms = shrunk[size]
        photo.results[name] = _detect(rgb, small, upsample, full_ms + resize_ms)
    for size in SIZES:
        if jpeg and 2 * size <= long_side:
            fit = _fit(photo.width, photo.height, size)
            draft_ms, draft = _median_ms(lambda f=fit, s=size: imaging.resize_to_fit(
                _decode(data, f), s)[0])
            photo.decode_ms[f"draft {size}"] = draft_ms
            if variants and size in DRAFT_SIZES:
                photo.results[f"{size} u0 draft"] = _detect(rgb, draft, 0, draft_ms)
    if jpeg and variants and long_side >= 2 * SIZES[0]:
        fit = _fit(photo.width, photo.height, (long_side + 1) // 2)
        half_ms, half = _median_ms(lambda: _decode(data, fit))
        photo.decode_ms["draft half"] = half_ms
        # Detecting on it found the faces 1920-2048 px did (an earlier run); not repeated.
        if tiles:
            tile, overlap, coarse = TILE_PLAN
            photo.results[f"tiles {tile}/{overlap} full u0 +{coarse} u0"] = _tiles(
                rgb, tile, overlap, photo.results[f"{coarse} u0"])
    for first, second in TWO_PASS:
        if first not in photo.results or second not in photo.results:
            continue
        size = int(first.split()[0])
        # The photo is decoded in full once; the same resized copy is not made twice.
        extra = photo.results[second].prep_ms
        if "draft" not in first:
            extra -= full_ms
            if second.split()[0] == first.split()[0]:
                extra = 0.0
        photo.results[f"{first} > {second} small"] = _second_look(
            photo.results[first], photo.results[second], min(size / long_side, 1.0), extra)
    # The rule proposed for production: shrink only beyond SCAN_MAX, upsample within it.
    upsample = 1 if 2 * long_side <= SCAN_MAX else 0
    if long_side <= SCAN_MAX:
        photo.results[SCAN] = photo.results[f"full u{upsample}"]
    else:
        start = _clock()
        small, _ = imaging.resize_to_fit(rgb, SCAN_MAX)
        photo.results[SCAN] = _detect(rgb, small, 0, full_ms + _ms(start))
    return rgb


# --- scoring and printing ------------------------------------------------------------------


@dataclass
class Score:
    photos: int = 0
    ms: list[float] = field(default_factory=list)
    prep: list[float] = field(default_factory=list)
    found: int = 0
    matched: int = 0
    lost_small: int = 0
    lost_big: int = 0
    extra: int = 0
    min_iou_big: float = 1.0
    lost: list[tuple[str, int, float]] = field(default_factory=list)  # photo, px, ref score
    min_found: int = 0  # the smallest reference face found, px
    truth_found: int = 0
    truth: int = 0


def score(photos: Sequence[Photo], name: str) -> Score:
    s = Score()
    for photo in photos:
        if name not in photo.results:
            continue
        found, ref = photo.results[name], photo.results["full u1"]
        pairs = match(ref.boxes, found.boxes)
        s.photos += 1
        s.ms.append(found.ms)
        s.prep.append(found.prep_ms)
        s.found += len(found.boxes)
        s.matched += len(pairs)
        s.extra += len(found.boxes) - len(pairs)
        for i, box in enumerate(ref.boxes):
            if i in pairs:
                if side(box) >= SMALL_FACE:
                    s.min_iou_big = min(s.min_iou_big, pairs[i][1])
                s.min_found = min(s.min_found or side(box), side(box))
            else:
                s.lost_big += side(box) >= SMALL_FACE
                s.lost_small += side(box) < SMALL_FACE
                s.lost.append((photo.name, side(box), ref.scores[i]))
        s.truth += len(photo.truth)
        s.truth_found += len(match(photo.truth, found.boxes))
    return s


def print_table(title: str, photos: Sequence[Photo], names: Sequence[str]) -> None:
    print(f"\n{title} ({len(photos)} photos; reference = full u1)")
    print("ms: CPU ms a photo, bytes to boxes (median; dec = decode + fit part); tot s: sum; "
          "L<80, L>=80: reference faces lost; maxL: largest lost px; minF: smallest found px; "
          "IoU: worst >=80 px match; truth: labelled faces found")
    print(f"{'setting':33s} {'ms':>6s} {'dec':>4s} {'tot s':>6s} {'found':>5s} {'match':>5s} "
          f"{'L<80':>4s} {'L>=80':>5s} {'extra':>5s} {'maxL':>4s} {'minF':>4s} {'IoU':>4s} "
          f"{'truth':>7s}")
    for name in names:
        s = score(photos, name)
        if not s.photos:
            continue
        max_lost = max((px for _, px, _ in s.lost), default=0)
        print(f"{name:33s} {statistics.median(s.ms):6.0f} {statistics.median(s.prep):4.0f} "
              f"{sum(s.ms) / 1000:6.1f} {s.found:5d} {s.matched:5d} {s.lost_small:4d} "
              f"{s.lost_big:5d} {s.extra:5d} {max_lost or '-':>4} {s.min_found:4d} "
              f"{s.min_iou_big:4.2f} "
              f"{s.truth_found:3d}/{s.truth:<3d}")


def print_by_set(photos: Sequence[Photo], names: Sequence[str], sets: Sequence[str]) -> None:
    print("\nBy set: median CPU ms a photo, lost >=80 px / lost <80 px")
    print(f"{'setting':33s} " + " ".join(f"{s:>14s}" for s in sets))
    for name in names:
        cells = []
        for set_name in sets:
            s = score([p for p in photos if p.set == set_name], name)
            cells.append(f"{statistics.median(s.ms):5.0f} {s.lost_big:3d}/{s.lost_small:<3d}"
                         if s.photos else "-")
        print(f"{name:33s} " + " ".join(f"{c:>14s}" for c in cells))


def print_lost(photos: Sequence[Photo], names: Sequence[str]) -> None:
    print("\nLost >=80 px faces where a setting loses 1-3 of them: photo px (reference score; "
          "HOG scores run 0-3, under 0.3 is a face at the edge of detection)")
    for name in names:
        big = [lost for lost in score(photos, name).lost if lost[1] >= SMALL_FACE]
        if 0 < len(big) <= 3:
            print(f"  {name:33s} " + ", ".join(f"{p} {px} ({sc:.2f})" for p, px, sc in big))


def print_decode(photos: Sequence[Photo]) -> None:
    print("\nJPEG decode to an image of S px, median CPU ms over the 12 MP photos: full decode "
          "+ Lanczos fit, or draft decode (1/2, 1/4) + fit")
    full = statistics.median(p.decode_ms["full"] for p in photos)
    print(f"  full decode only: {full:.0f}")
    for size in SIZES:
        resize = [p.decode_ms[f"resize {size}"] for p in photos]
        draft = [p.decode_ms[f"draft {size}"] for p in photos if f"draft {size}" in p.decode_ms]
        line = f"  {size:4d}: full+fit {full + statistics.median(resize):4.0f}"
        if draft:
            line += f"   draft+fit {statistics.median(draft):4.0f} ({len(draft)} photos)"
        else:
            line += "   draft: n/a (S > half the photo)"
        print(line)
    halves = [p.decode_ms["draft half"] for p in photos if "draft half" in p.decode_ms]
    if halves:
        print(f"  1/2 draft as is (no fit): {statistics.median(halves):.0f}")


def encode_ms(rgb: RGB, boxes: Sequence[Box]) -> tuple[float, float]:
    """CPU ms a face for landmarks + encoding on the full image and on the working image."""
    engine = face_engine.FaceEngine()
    work, _ = imaging.resize_to_fit(rgb, WORK_SIZE)
    out = []
    for image, target in ((rgb, boxes), (work, _map(boxes, rgb.shape, work.shape))):
        start = _clock()
        engine.encode(image, list(target))
        out.append(_ms(start) / len(boxes))
    return out[0], out[1]


def _work_images(photo: Photo, rgb: RGB) -> tuple[RGB, RGB]:
    """The working image from the full decode (today) and from a 1/2 draft decode."""
    lanczos, _ = imaging.resize_to_fit(rgb, WORK_SIZE)
    fit = _fit(photo.width, photo.height, WORK_SIZE)
    draft, _ = imaging.resize_to_fit(_decode(photo.path.read_bytes(), fit), WORK_SIZE)
    return lanczos, draft


def encoding_check(photos: Sequence[Photo], names: Sequence[str],
                   decoded: dict[str, RGB]) -> None:
    """Encoding distances between reference and candidate boxes, >= 80 px faces."""
    engine = face_engine.FaceEngine()
    print("\nEncodings of matched >=80 px faces on the 1920 px working image: reference box "
          "vs candidate box (same person is < 0.6; two photos of one person ~0.45)")
    distances: dict[str, list[float]] = {name: [] for name in [*names, "work image by draft"]}
    for photo in photos:
        rgb = decoded[photo.name]
        work, draft_work = _work_images(photo, rgb)
        ref = photo.results["full u1"].boxes
        ref_big = [b for b in ref if side(b) >= SMALL_FACE]
        if not ref_big:
            continue
        ref_codes = engine.encode(work, _map(ref_big, rgb.shape, work.shape))
        # Same boxes on a working image made from a draft decode: the other cheap win.
        draft_codes = engine.encode(draft_work, _map(ref_big, rgb.shape, draft_work.shape))
        distances["work image by draft"] += list(np.linalg.norm(ref_codes - draft_codes, axis=1))
        for name in names:
            found = photo.results.get(name)
            if found is None:
                continue
            pairs = match(ref_big, found.boxes)
            if not pairs:
                continue
            codes = engine.encode(work, _map([found.boxes[j] for j, _ in pairs.values()],
                                             rgb.shape, work.shape))
            distances[name] += list(np.linalg.norm(ref_codes[list(pairs)] - codes, axis=1))
    for name, values in distances.items():
        if values:
            print(f"  {name:33s} faces {len(values):3d}  median {statistics.median(values):.3f}"
                  f"  95th pct {float(np.percentile(values, 95)):.3f}  max {max(values):.3f}")


def print_projection(photos: Sequence[Photo], encode_full: float, encode_work: float) -> None:
    """Bytes to encodings per photo: the naive path, today's, and the proposed one."""
    print(f"\nProjected CPU ms a 12 MP photo, decode + detect + encode its reference faces "
          f"(median by set; encode {encode_full:.0f} ms a face on the full photo, "
          f"{encode_work:.0f} on the working image)")
    paths = {
        "naive: full u1, encode full": lambda p: (p.results["full u1"].ms,
                                                 encode_full, 0.0),
        "today: 1920 u1 (work image)": lambda p: (p.results["1920 u1"].ms, encode_work, 0.0),
        f"proposed: {SCAN} + draft work": lambda p: (
            p.results[SCAN].ms, encode_work, p.decode_ms.get("draft 1920", 0.0)),
    }
    sets = [s for s in photosets.SETS if any(p.set == s for p in photos)]
    print(f"{'path':33s} " + " ".join(f"{s:>9s}" for s in sets) + f" {'all':>9s}")
    for label, parts in paths.items():
        cells = []
        for subset in [[p for p in photos if p.set == s] for s in sets] + [list(photos)]:
            costs = []
            for photo in subset:
                detect_ms, per_face, extra = parts(photo)
                costs.append(detect_ms + extra + per_face * len(photo.results["full u1"].boxes))
            cells.append(f"{statistics.median(costs):9.0f}")
        print(f"{label:33s} " + " ".join(cells))


def check_engine(photo: Photo, rgb: RGB) -> None:
    """Our inline detection must equal FaceEngine.detect, or the figures describe nothing."""
    engine = face_engine.FaceEngine(upsample=1, detection_max_dimension=1536)
    ours = sorted(photo.results["1536 u1"].boxes, key=lambda b: (b[3], b[0]))
    theirs = [box for box, _ in engine.detect(rgb)]
    status = "same boxes" if ours == theirs else f"DIFFERENT: {ours} vs {theirs}"
    print(f"check: inline '1536 u1' vs FaceEngine(detection_max_dimension=1536).detect on "
          f"{photo.name}: {status}")


def setting_names(photos: Sequence[Photo]) -> list[str]:
    seen: dict[str, None] = {}
    for photo in photos:
        for name in photo.results:
            seen.setdefault(name, None)
    first = ["full u1", "full u0", SCAN]
    return first + [n for n in seen if n not in first]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=photosets.DEFAULT_CACHE,
                        help="photo sets and cached references (outside the repository)")
    parser.add_argument("--dev", action="store_true",
                        help="also the original dev photos at their own size")
    parser.add_argument("--refresh", action="store_true", help="re-run the full-size references")
    parser.add_argument("--quick", action="store_true",
                        help="grid, second looks and the proposed rule only")
    parser.add_argument("--tiles", action="store_true",
                        help=f"also tiles {TILE_PLAN[0]}/{TILE_PLAN[1]} (~75 s more)")
    parser.add_argument("--encodings", default=",".join(DEFAULT_ENCODINGS),
                        help="comma-separated settings whose boxes to compare by encoding "
                             "('' for none)")
    args = parser.parse_args(argv)
    if not devset.available():
        print(f"SKIPPED: no labelled photos at {devset.DEV_SET}")
        return 0
    started = time.perf_counter()
    print(f"{platform.python_implementation()} {platform.python_version()}, dlib "
          f"{dlib.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '-')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    built = photosets.build(args.cache)
    photos = [Photo(p.set, p.file, p.path, [f.box for f in p.faces]) for p in built]
    face_engine.FaceEngine().load()  # model loading stays out of every timing
    if args.refresh:
        (args.cache / "reference.json").unlink(missing_ok=True)
    computed = references(photos, args.cache / "reference.json")
    print(f"full-resolution references: {computed} computed, {len(photos) - computed} cached")
    decoded = {photo.name: run_photo(photo, variants=not args.quick, tiles=args.tiles)
               for photo in photos}
    check_engine(photos[0], decoded[photos[0].name])
    names = setting_names(photos)
    print_table("12 MP photo sets", photos, names)
    print_by_set(photos, names, photosets.SETS)
    print_lost(photos, names)
    print_decode(photos)

    group = next(p for p in photos if p.set == "group")
    group_boxes = group.results["full u1"].boxes
    encode_full, encode_work = encode_ms(decoded[group.name], group_boxes)
    print(f"\nLandmarks + encoding, CPU ms a face ({group.name}, {len(group_boxes)} faces): "
          f"{encode_full:.0f} on the full photo, {encode_work:.0f} on the {WORK_SIZE} px "
          "working image")
    print_projection(photos, encode_full, encode_work)
    wanted = [] if args.quick else [n.strip() for n in args.encodings.split(",") if n.strip()]
    if wanted:
        encoding_check(photos, wanted, decoded)
    decoded.clear()

    if args.dev:
        dev_photos = [Photo("dev", p.file, devset.DEV_SET / p.file, [])
                      for p in devset.manifest()]
        boxes = devset.face_boxes()
        for photo in dev_photos:
            photo.truth = [box for box, _ in boxes.get(photo.name, [])]
        references(dev_photos, args.cache / "reference.json")
        for photo in dev_photos:
            run_photo(photo, variants=False)
        dev_names = setting_names(dev_photos)
        print_table("Original dev photos at their own size (150-2000 px)", dev_photos,
                    dev_names)
        print_lost(dev_photos, dev_names)
    print(f"\nwall time {time.perf_counter() - started:.0f} s, load average "
          f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
