"""12 MP test photos made from the labelled dev photos, for the face-detection size benchmark.

Camera photos are ~12 MP while the dev set (../shared/faces/dev) is mostly small, so this
builds deterministic 12 MP JPEGs (quality 92) from it, in a cache folder outside the
repository (the photos must never be committed):

* ``portrait``: single-person dev photos upscaled (Lanczos, aspect kept) to ~12 MP; the
  largest photo of each identity first, so faces come out ~250-1000 px;
* ``group``: 12 face crops of distinct identities (FACES.tsv boxes, padded by half a face on
  every side) on a 4000x3000 background, faces 150-400 px;
* ``crowd``: ~30 crops of distinct identities, faces 50-150 px (about a third under 80 px);
* ``mixed`` (extra): one large face (600-900 px) with five small ones (70-160 px) behind it,
  the tourist-photo case where a "second look only for group photos" rule would fail.

Mosaic backgrounds are the dev set's no-face photos (dogs, landscape) upscaled to fill the
canvas, so detectors also meet texture that is not a face. Placement is random but seeded by
the photo's name, so every build gives the same pixels. ``truth.tsv`` next to the photos has
one row a face: ``set file face identity top right bottom left source``, the box being the
dev set's HOG box mapped into the 12 MP photo's pixels.

    python -m bench.photosets [--cache /tmp/face-gallery-photosets] [--force]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests import devset

__all__ = ["DEFAULT_CACHE", "SETS", "BenchPhoto", "TruthFace", "build", "load"]

DEFAULT_CACHE = Path("/tmp/face-gallery-photosets")
#: Bump when the recipe changes: a cache built by another version is rebuilt.
VERSION = 2
SETS = ("portrait", "group", "crowd", "mixed")

TARGET_PIXELS = 12_000_000
CANVAS = (4000, 3000)  # width, height: a 12 MP 4:3 camera frame
JPEG_QUALITY = 92
#: Crop padding, in face sizes on each side: enough head and shoulders that the crop's edge
#: does not touch the face, as in a real photo.
PADDING = 0.5
#: Free pixels kept between two pasted crops.
GAP = 24

PORTRAITS = 10
GROUPS = 3
GROUP_FACES = 12
GROUP_SIZES = (150, 400)
CROWDS = 2
CROWD_FACES = 30
CROWD_SIZES = (50, 150)
MIXED = 2
MIXED_BIG = (600, 900)
MIXED_SMALL = (70, 160)
MIXED_SMALL_FACES = 5

Box = tuple[int, int, int, int]  # (top, right, bottom, left), like face_recognition


@dataclass(frozen=True)
class TruthFace:
    """One face in a built photo, with its box in that photo's pixels."""

    set: str
    file: str
    face: int
    identity: str
    box: Box
    source: str

    @property
    def size(self) -> int:
        """Shorter side of the box, the size the benchmark's <80 px split uses."""
        top, right, bottom, left = self.box
        return min(bottom - top, right - left)


@dataclass(frozen=True)
class BenchPhoto:
    set: str
    file: str
    path: Path
    faces: tuple[TruthFace, ...]


@dataclass(frozen=True)
class _Face:
    file: str
    identity: str
    box: Box

    @property
    def size(self) -> int:
        return min(self.box[2] - self.box[0], self.box[1] - self.box[3])


def _open_rgb(path: Path) -> Image.Image:
    # No EXIF transpose: FACES.tsv boxes come from face_recognition.load_image_file, which
    # reads the stored pixel grid as it is.
    with Image.open(path) as img:
        return img.convert("RGB")


def _dev_faces(dev: Path) -> list[_Face]:
    faces = []
    for file, rows in sorted(devset.face_boxes(dev).items()):
        faces.extend(_Face(file, identity, box) for box, identity in rows)
    return faces


def _scale_box(box: Box, sy: float, sx: float, dy: int = 0, dx: int = 0) -> Box:
    top, right, bottom, left = box
    return (round(top * sy) + dy, round(right * sx) + dx, round(bottom * sy) + dy,
            round(left * sx) + dx)


def _portraits(dev: Path, cache: Path) -> list[TruthFace]:
    photos = [p for p in devset.manifest(dev) if len(p.identities) == 1 and p.faces_hog == 1]
    # Big sources first: an upscaled 150 px crop is a blur, not a camera photo. One photo per
    # identity before any second one, so the set is not one person's face many times.
    photos.sort(key=lambda p: (-p.width * p.height, p.file))
    chosen, seen = [], set()
    for photo in photos:
        if photo.identities[0] not in seen:
            chosen.append(photo)
            seen.add(photo.identities[0])
    chosen += [p for p in photos if p not in chosen][:max(0, PORTRAITS - len(chosen))]
    boxes = devset.face_boxes(dev)
    truth = []
    for n, photo in enumerate(chosen[:PORTRAITS], start=1):
        img = _open_rgb(dev / photo.file)
        scale = math.sqrt(TARGET_PIXELS / (img.width * img.height))
        size = (round(img.width * scale), round(img.height * scale))
        name = f"portrait_{n:02d}.jpg"
        img.resize(size, Image.Resampling.LANCZOS).save(cache / name, quality=JPEG_QUALITY)
        sy, sx = size[1] / img.height, size[0] / img.width
        for i, (box, identity) in enumerate(boxes[photo.file]):
            truth.append(TruthFace("portrait", name, i, identity, _scale_box(box, sy, sx),
                                   photo.file))
    return truth


def _background(dev: Path, n: int) -> Image.Image:
    nofaces = sorted(p.file for p in devset.manifest(dev) if not p.identities)
    img = _open_rgb(dev / nofaces[n % len(nofaces)])
    # Cover the canvas, then centre-crop: no bars whose edges would look like structure.
    scale = max(CANVAS[0] / img.width, CANVAS[1] / img.height)
    size = (math.ceil(img.width * scale), math.ceil(img.height * scale))
    img = img.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - CANVAS[0]) // 2, (size[1] - CANVAS[1]) // 2
    return img.crop((left, top, left + CANVAS[0], top + CANVAS[1]))


def _crop(dev: Path, face: _Face, face_size: float) -> tuple[Image.Image, Box]:
    """The padded face scaled so its box's shorter side is ``face_size``; box in the crop."""
    img = _open_rgb(dev / face.file)
    top, right, bottom, left = face.box
    pad_y, pad_x = round((bottom - top) * PADDING), round((right - left) * PADDING)
    ct, cl = max(0, top - pad_y), max(0, left - pad_x)
    cb, cr = min(img.height, bottom + pad_y), min(img.width, right + pad_x)
    scale = face_size / face.size
    size = (max(1, round((cr - cl) * scale)), max(1, round((cb - ct) * scale)))
    crop = img.crop((cl, ct, cr, cb)).resize(size, Image.Resampling.LANCZOS)
    # Per-axis factors from the real sizes, as services.faces maps its boxes.
    sy, sx = size[1] / (cb - ct), size[0] / (cr - cl)
    return crop, _scale_box((top - ct, right - cl, bottom - ct, left - cl), sy, sx)


def _place(rng: random.Random, sizes: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Top-left corners for rectangles (w, h), largest first, none overlapping; None if stuck."""
    placed: list[tuple[int, int, int, int]] = []
    corners: dict[int, tuple[int, int]] = {}
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i][0] * sizes[i][1]):
        w, h = sizes[i]
        for _ in range(4000):
            x, y = rng.randrange(0, CANVAS[0] - w + 1), rng.randrange(0, CANVAS[1] - h + 1)
            if all(x + w + GAP <= px or px + pw + GAP <= x or y + h + GAP <= py
                   or py + ph + GAP <= y for px, py, pw, ph in placed):
                placed.append((x, y, w, h))
                corners[i] = (x, y)
                break
        else:
            return None
    return [corners[i] for i in range(len(sizes))]


def _spread(rng: random.Random, count: int, low: float, high: float) -> list[float]:
    # Stratified, not plain uniform: every part of the size range gets faces in every photo.
    return [low + (high - low) * (i + rng.random()) / count for i in range(count)]


def _mosaic(dev: Path, cache: Path, kind: str, n: int, picks: list[_Face],
            sizes: list[float]) -> list[TruthFace]:
    name = f"{kind}_{n:02d}.jpg"
    rng = random.Random(f"place-{name}")
    crops = [_crop(dev, face, size) for face, size in zip(picks, sizes, strict=True)]
    corners = None
    while corners is None:  # a new draw from the same seeded stream: still deterministic
        corners = _place(rng, [c.size for c, _ in crops])
    # Offset by the kind so that not every first mosaic gets the same background.
    canvas = _background(dev, n + SETS.index(kind))
    truth = []
    for (crop, box), (x, y), face in zip(crops, corners, picks, strict=True):
        canvas.paste(crop, (x, y))
        truth.append((_scale_box(box, 1.0, 1.0, y, x), face))
    canvas.save(cache / name, quality=JPEG_QUALITY)
    # Faces numbered left to right, as detectors and FACES.tsv list them.
    truth.sort(key=lambda item: (item[0][3], item[0][0]))
    return [TruthFace(kind, name, i, face.identity, box, face.file)
            for i, (box, face) in enumerate(truth)]


def _by_identity(faces: list[_Face], min_size: int = 0) -> dict[str, list[_Face]]:
    found: dict[str, list[_Face]] = {}
    for face in faces:
        if face.size >= min_size:
            found.setdefault(face.identity, []).append(face)
    return found


def _groups(dev: Path, cache: Path, faces: list[_Face]) -> list[TruthFace]:
    # Sources of 85 px or more only: 150-400 px faces from 50 px ones would be 8x blurs.
    pool = _by_identity(faces, min_size=85)
    truth = []
    for n in range(1, GROUPS + 1):
        rng = random.Random(f"group-{n}")
        identities = rng.sample(sorted(pool), GROUP_FACES)
        picks = [rng.choice(pool[i]) for i in identities]
        # Largest targets to the largest sources, to keep upscaling (blur) moderate.
        sizes = sorted(_spread(rng, GROUP_FACES, *GROUP_SIZES))
        order = sorted(range(GROUP_FACES), key=lambda i: picks[i].size)
        picked = [picks[i] for i in order]
        truth += _mosaic(dev, cache, "group", n, picked, sizes)
    return truth


def _crowds(dev: Path, cache: Path, faces: list[_Face]) -> list[TruthFace]:
    pool = _by_identity(faces)
    truth = []
    for n in range(1, CROWDS + 1):
        rng = random.Random(f"crowd-{n}")
        identities = rng.sample(sorted(pool), min(CROWD_FACES, len(pool)))
        picks = [rng.choice(pool[i]) for i in identities]
        sizes = _spread(rng, len(picks), *CROWD_SIZES)
        rng.shuffle(sizes)
        truth += _mosaic(dev, cache, "crowd", n, picks, sizes)
    return truth


def _mixed(dev: Path, cache: Path, faces: list[_Face]) -> list[TruthFace]:
    big_pool = _by_identity(faces, min_size=180)
    pool = _by_identity(faces)
    truth = []
    for n in range(1, MIXED + 1):
        rng = random.Random(f"mixed-{n}")
        big = rng.choice(sorted(big_pool))
        others = rng.sample(sorted(i for i in pool if i != big), MIXED_SMALL_FACES)
        picks = [rng.choice(big_pool[big])] + [rng.choice(pool[i]) for i in others]
        sizes = [rng.uniform(*MIXED_BIG)] + _spread(rng, MIXED_SMALL_FACES, *MIXED_SMALL)
        truth += _mosaic(dev, cache, "mixed", n, picks, sizes)
    return truth


def _meta_ok(cache: Path) -> bool:
    meta_path = cache / "photosets.json"
    if not meta_path.exists() or not (cache / "truth.tsv").exists():
        return False
    meta = json.loads(meta_path.read_text())
    return meta.get("version") == VERSION and all((cache / f).exists() for f in meta["files"])


def build(cache: Path = DEFAULT_CACHE, dev: Path = devset.DEV_SET, *,
          force: bool = False) -> list[BenchPhoto]:
    """Build the photo sets into ``cache`` unless an up-to-date build is there; list them.

    :raise FileNotFoundError: the dev set is missing (check :func:`tests.devset.available`).
    """
    if not devset.available(dev):
        raise FileNotFoundError(f"no labelled photos at {dev}")
    cache.mkdir(parents=True, exist_ok=True)
    if force or not _meta_ok(cache):
        faces = _dev_faces(dev)
        truth = (_portraits(dev, cache) + _groups(dev, cache, faces)
                 + _crowds(dev, cache, faces) + _mixed(dev, cache, faces))
        with open(cache / "truth.tsv", "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(["set", "file", "face", "identity", "top", "right", "bottom",
                             "left", "source"])
            for f in truth:
                writer.writerow([f.set, f.file, f.face, f.identity, *f.box, f.source])
        files = sorted({f.file for f in truth})
        (cache / "photosets.json").write_text(
            json.dumps({"version": VERSION, "files": files}, indent=1) + "\n")
    return load(cache)


def load(cache: Path = DEFAULT_CACHE) -> list[BenchPhoto]:
    """The built photos in SETS order, then by name, with their true faces."""
    by_file: dict[str, list[TruthFace]] = {}
    with open(cache / "truth.tsv", newline="") as handle:
        for r in csv.DictReader(handle, delimiter="\t"):
            box = (int(r["top"]), int(r["right"]), int(r["bottom"]), int(r["left"]))
            by_file.setdefault(r["file"], []).append(
                TruthFace(r["set"], r["file"], int(r["face"]), r["identity"], box, r["source"]))
    photos = [BenchPhoto(faces[0].set, file, cache / file, tuple(faces))
              for file, faces in by_file.items()]
    return sorted(photos, key=lambda p: (SETS.index(p.set), p.file))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"output folder, outside the repository (default {DEFAULT_CACHE})")
    parser.add_argument("--dev", type=Path, default=devset.DEV_SET, help="labelled photos")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    if not devset.available(args.dev):
        print(f"SKIPPED: no labelled photos at {args.dev}")
        return 0
    photos = build(args.cache, args.dev, force=args.force)
    print(f"{len(photos)} photos in {args.cache}")
    for name in SETS:
        subset = [p for p in photos if p.set == name]
        sizes = [f.size for p in subset for f in p.faces]
        if subset:
            with Image.open(subset[0].path) as first:
                dims = f"{first.width}x{first.height}"
            print(f"  {name:9s} {len(subset):2d} photos (first {dims}), {len(sizes):3d} faces, "
                  f"{min(sizes)}-{max(sizes)} px, {sum(s < 80 for s in sizes)} under 80 px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
