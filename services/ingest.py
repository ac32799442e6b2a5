"""Photo analysis before anything is stored: decode, detect, encode, crop; in a process pool.

:func:`analyse_photo` is pure work on bytes (no database, no shared state but the per-process
dlib models), so a batch runs it in :class:`IngestPool`'s worker processes, one photo each,
while the calling process writes the results in order (``services/upload.py``). At most
``IN_FLIGHT_PER_WORKER`` photos per worker are read at once, and each process decodes only
what fits in its pixel budget (:mod:`services.budget`), so a batch of hundreds of large photos
never sits in memory together (docs/ingest.md, "Memory").
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
import time
import typing as t
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from errors import FileSizeError
from errors import GalleryError
from services import budget
from services import imaging
from services.face_engine import FaceEngine

__all__ = ["AnalysedFace", "Analysis", "AnalysisOptions", "IngestPool", "analyse_photo"]

#: Photos read and handed to the pool ahead of the one being written, per worker process:
#: enough to keep every worker busy, few enough that memory stays bounded.
IN_FLIGHT_PER_WORKER = 2

Loader = Callable[[], bytes]
T = t.TypeVar("T")


@dataclass(frozen=True)
class AnalysisOptions:
    """The settings analysis depends on; plain values, so they cross into worker processes."""

    allowed_formats: tuple[str, ...]
    max_pixels: int
    image_max_dimension: int
    store_originals: bool
    quality: int
    crop_padding: float
    model: str
    upsample: int
    num_jitters: int
    detection_max_dimension: int | None
    #: A photo over this many bytes is refused (413) before it is decoded.
    max_bytes: int = 50 * 2**20

    @classmethod
    def from_settings(cls, settings: Mapping[str, t.Any]) -> AnalysisOptions:
        """Options from the validated app settings."""
        return cls(
            allowed_formats=tuple(settings["ALLOWED_EXTENSIONS"]),
            max_pixels=settings["IMAGE_MAX_PIXELS"],
            image_max_dimension=settings["IMAGE_MAX_DIMENSION"],
            store_originals=settings["STORE_ORIGINALS"], quality=settings["IMAGE_QUALITY"],
            crop_padding=settings["FACE_CROP_PADDING"], model=settings["FACE_DETECTION_MODEL"],
            upsample=settings["FACE_DETECTION_UPSAMPLE"],
            num_jitters=settings["FACE_NUM_JITTERS"],
            detection_max_dimension=settings.get("FACE_DETECTION_MAX_DIMENSION") or None,
            max_bytes=settings.get("MAX_UPLOAD_BYTES", 50 * 2**20),
        )


@dataclass(frozen=True)
class AnalysedFace:
    """One face: box in the stored image's pixels (top, right, bottom, left), and its crop."""

    box: imaging.Box
    encoding: npt.NDArray[np.float32]
    quality: float
    detector_score: float | None
    crop_jpeg: bytes


@dataclass(frozen=True)
class Analysis:
    """What an upload writes, computed from its bytes alone."""

    sha256: str
    #: The bytes kept as the photo: the upload itself, or its compressed copy when
    #: originals are not stored.
    stored: bytes
    mime_type: str
    #: A JPEG (PNG with transparency) fitted into the display size, when the stored photo is
    #: larger or not a web format; None when the stored photo serves screens itself.
    display: bytes | None
    display_mime_type: str
    #: Size of the stored image (the boxes' pixel grid).
    width: int
    height: int
    original_size_bytes: int
    original_format: str
    exif: dict[str, t.Any]
    faces: list[AnalysedFace]


# One engine per process and settings: dlib's models are loaded once, on first use.
_engines: dict[tuple[t.Any, ...], FaceEngine] = {}
_engines_lock = threading.Lock()


def engine_for(options: AnalysisOptions) -> FaceEngine:
    """This process's face engine for these options."""
    key = (options.model, options.upsample, options.num_jitters, options.detection_max_dimension)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = FaceEngine(model=options.model, upsample=options.upsample,
                                       num_jitters=options.num_jitters,
                                       detection_max_dimension=options.detection_max_dimension)
        return _engines[key]


def analyse_photo(data: bytes, options: AnalysisOptions,
                  engine: FaceEngine | None = None) -> Analysis:
    """Decode, find, encode and crop every face, and make the bytes to store.

    Faces are detected on a copy fitted into ``detection_max_dimension`` (the whole decoded
    photo when None), then landmarks and encodings are computed on the decoded photo itself,
    so a small face in a large photo is encoded from all its pixels. Crops and the stored
    copy are fitted into ``image_max_dimension``.

    Refused from its header when over ``max_pixels``; otherwise analysed once its pixels fit
    in this process's budget (:mod:`services.budget`), which it holds until done.

    :raise FileValidationError: the bytes are not a supported image.
    """
    if len(data) > options.max_bytes:
        raise FileSizeError(f"The photo is {len(data) / 2**20:.1f} MB, over the "
                            f"{options.max_bytes / 2**20:.0f} MB a photo may be "
                            "(MAX_UPLOAD_BYTES)",
                            details={"size_bytes": len(data), "max_bytes": options.max_bytes})
    width, height = imaging.probe(data, allowed_formats=options.allowed_formats,
                                  max_pixels=options.max_pixels)
    with budget.for_process(options.max_pixels).hold(width * height):
        return _analyse(data, options, engine)


def _analyse(data: bytes, options: AnalysisOptions, engine: FaceEngine | None) -> Analysis:
    decoded = imaging.decode_upload(data, allowed_formats=options.allowed_formats,
                                    max_pixels=options.max_pixels)
    work, scale = imaging.working_copy(data, decoded, options.image_max_dimension)
    found = (engine or engine_for(options)).analyse(decoded.rgb)
    display: bytes | None = None
    display_mime_type = ""
    if options.store_originals:
        # The original bytes are kept: boxes stay in its (upright) pixel grid, and screens
        # get a copy fitted into the display size when the original is larger.
        stored, mime_type = data, decoded.mime_type
        box_scale = 1.0
        width, height = decoded.width, decoded.height
        if scale != 1.0 or mime_type not in imaging.DISPLAY_TYPES:
            display, display_mime_type = imaging.encode_for_storage(decoded, work,
                                                                    quality=options.quality)
    else:
        stored, mime_type = imaging.encode_for_storage(decoded, work, quality=options.quality)
        box_scale = scale
        width, height = work.shape[1], work.shape[0]
    faces = []
    for face in found:
        in_work = _scaled(face.box, scale, work.shape)
        faces.append(AnalysedFace(
            box=_scaled(face.box, box_scale, (height, width)), encoding=face.encoding,
            quality=face.quality, detector_score=face.detector_score,
            crop_jpeg=imaging.encode_jpeg(imaging.crop_box(work, in_work, options.crop_padding),
                                          options.quality)))
    return Analysis(sha256=decoded.sha256, stored=stored, mime_type=mime_type, display=display,
                    display_mime_type=display_mime_type, width=width,
                    height=height, original_size_bytes=len(data),
                    original_format=decoded.format, exif=decoded.exif, faces=faces)


def _scaled(box: imaging.Box, scale: float, shape: tuple[int, ...]) -> imaging.Box:
    """A (top, right, bottom, left) box in a copy ``scale`` times the size, inside ``shape``."""
    if scale == 1.0:
        return box
    top, right, bottom, left = (round(v * scale) for v in box)
    height, width = shape[0], shape[1]
    return (max(0, top), min(width, right), min(height, bottom), max(0, left))


def _analyse_in_worker(data: bytes, options: AnalysisOptions) -> Analysis | GalleryError:
    # The pool's processes are spawned: Pillow's limit starts at its default there.
    imaging.limit_pixels(options.max_pixels)
    # A GalleryError is returned, not raised: it is the photo's answer, not the pool's failure.
    try:
        return analyse_photo(data, options)
    except GalleryError as err:
        return err


def _worker_start() -> None:
    # Each worker is one analysis at a time on one core: a multi-threaded BLAS would only
    # fight the other workers for the same cores.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


class IngestPool:
    """``workers`` processes analysing photos; ``workers=1`` analyses in the calling process.

    Processes are started with ``spawn``: the caller may hold database clients and threads,
    which a forked child must not inherit. They start on the first batch and live until
    :meth:`close` (each holds the dlib models, about 100 MB).
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> concurrent.futures.ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_start)
            return self._executor

    def analyse(self, items: Iterable[tuple[str, Loader]], options: AnalysisOptions, *,
                precheck: Callable[[bytes], T | None] | None = None,
                ) -> Iterator[tuple[str, Analysis | GalleryError | T, float]]:
        """Analyse photos, yielding ``(name, outcome, seconds)`` in the items' order.

        The outcome is the :class:`Analysis`, or the ``GalleryError`` that answers the photo
        (not an image, too large...), or what ``precheck`` returned: it sees each photo's
        bytes first, in this process, and a result other than None stands for the analysis
        (a duplicate needs none). Each loader is called only when its photo's turn comes: at
        most ``IN_FLIGHT_PER_WORKER * workers`` photos are loaded and not yet yielded.
        """
        pending: deque[tuple[str, t.Any, float]] = deque()
        limit = IN_FLIGHT_PER_WORKER * self.workers
        for name, load in items:
            submitted = time.perf_counter()
            outcome: t.Any
            data = b""
            try:
                data = load()
                outcome = precheck(data) if precheck is not None else None
                if outcome is None:
                    outcome = (analyse_photo(data, options) if self.workers == 1 else
                               self._pool().submit(_analyse_in_worker, data, options))
            except GalleryError as err:
                outcome = err
            data = b""  # only the pool's copy stays alive while it waits
            pending.append((name, outcome, submitted))
            if len(pending) >= limit:
                yield _finish(*pending.popleft())
        while pending:
            yield _finish(*pending.popleft())

    def close(self) -> None:
        """Stop the worker processes (they start again on the next batch)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None


def _finish(name: str, outcome: t.Any, submitted: float) -> tuple[str, t.Any, float]:
    if isinstance(outcome, concurrent.futures.Future):
        outcome = outcome.result()
    return name, outcome, time.perf_counter() - submitted

