"""Benchmark: peak memory of analysing one photo, per pixel, and of three photos at once.

Each figure comes from a process of its own (``ru_maxrss`` over the process's resident size
once dlib is loaded and a small photo analysed): ``ingest.analyse_photo`` on flat PNGs (RGB,
RGBA, palette, grey) and a JPEG of the sizes asked, then three distinct photos analysed by
three threads at once, within the pixel budget (one photo's pixels: they take turns) and
with a budget of three photos (decoded together, as before the budget). The bytes per pixel
are what ``services/budget.py`` states as ``PEAK_BYTES_PER_PIXEL``; docs/ingest.md,
"Memory", has the run. Nothing asserts.

    .venv/bin/python -m bench.pixel_budget [--sizes 4000x4000,8000x6000]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("rgb.png", "rgba.png", "palette.png", "grey.png", "rgb.jpg")

# Run in a child: analyse the files (several at once in threads), print the peak growth.
CHILD = """
import json, resource, sys, threading
from services import ingest
from tests import photos

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

capacity, paths = int(sys.argv[1]), sys.argv[2:]
options = ingest.AnalysisOptions(
    allowed_formats=("png", "jpg"), max_pixels=capacity, image_max_dimension=1920,
    store_originals=False, quality=85, crop_padding=0.1, model="hog", upsample=1, num_jitters=1,
    detection_max_dimension=4608)
ingest.analyse_photo(photos.blank_jpeg(), options)
base = rss_mb()
datas = [open(path, "rb").read() for path in paths]
threads = [threading.Thread(target=ingest.analyse_photo, args=(data, options)) for data in datas]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base))
"""


def write_photos(folder: Path, width: int, height: int) -> dict[str, Path]:
    """The five kinds at ``width`` x ``height``, plus two more RGB PNGs of other colours."""
    from PIL import Image

    from tests import photos

    files = {"rgb.png": photos.flat_png(width, height)}
    for number in (1, 2):
        files[f"rgb{number}.png"] = photos.flat_png(width, height, (40 * number, 90, 200))
    files["rgba.png"] = _png(width, height, 6, b"\x78\x82\x8c\x80")
    files["grey.png"] = _png(width, height, 0, b"\x80")
    files["palette.png"] = _png(width, height, 3, b"\x00", b"\x78\x82\x8c")
    jpeg = io.BytesIO()
    Image.new("RGB", (width, height), (120, 130, 140)).save(jpeg, "JPEG", quality=85)
    files["rgb.jpg"] = jpeg.getvalue()
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{width}x{height}-{name}"
        paths[name].write_bytes(data)
    return paths


def _png(width: int, height: int, colour_type: int, pixel: bytes, palette: bytes = b"") -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    packer = zlib.compressobj()
    row = b"\x00" + pixel * width
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + (chunk(b"PLTE", palette) if palette else b"") + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def peak_mb(capacity: int, paths: list[Path]) -> float:
    result = subprocess.run([sys.executable, "-c", CHILD, str(capacity), *map(str, paths)],
                            cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    return float(result.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4000x4000,8000x6000")
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            pixels = width * height
            paths = write_photos(Path(tmp), width, height)
            print(f"\n{width}x{height} ({pixels / 1e6:.0f} MP), one photo, peak growth:")
            for kind in KINDS:
                grown = peak_mb(pixels, [paths[kind]])
                print(f"  {kind:12} {grown:6.0f} MB  {grown * 2**20 / pixels:5.1f} bytes/pixel")
            one = peak_mb(pixels, [paths["rgb.png"]])
            three = [paths["rgb.png"], paths["rgb1.png"], paths["rgb2.png"]]
            turns = peak_mb(pixels, three)
            together = peak_mb(3 * pixels, three)
            print(f"  three at once, budget of one photo:    {turns:6.0f} MB  "
                  f"({turns / one:.2f}x one)")
            print(f"  three at once, budget of three photos: {together:6.0f} MB  "
                  f"({together / one:.2f}x one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
