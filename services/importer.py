"""Bulk import of a folder of photos: what ``flask gallery import`` does, without the terminal.

Files are found on disk, filed into an album and section given by name (created when
missing), and uploaded through :func:`services.upload.ingest_files`, the path the API's batch
upload takes. Bytes already stored come back as duplicates without being analysed, so a
second run, or the rest of an interrupted one, only does what is left.
"""

from __future__ import annotations

import os
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from errors import ValidationError
from services import catalog
from services import upload
from services.context import Gallery
from services.ingest import IngestPool
from services.storage import Store

Doc = dict[str, t.Any]


@dataclass
class Progress:
    """Where an import stands; handed to the progress callback after every file."""

    total: int
    started: float = field(default_factory=time.perf_counter)
    processed: int = 0
    imported: int = 0
    duplicates: int = 0
    failed: int = 0
    faces: int = 0
    persons_created: int = 0
    #: The last file's result (``upload.ingest_files`` shape).
    last: Doc | None = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        """Photos a second so far."""
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far; None before the first photo."""
        return (self.total - self.processed) / self.rate if self.rate else None

    def add(self, result: Doc) -> None:
        self.processed += 1
        self.last = result
        if not result["success"]:
            self.failed += 1
        elif result["duplicate"]:
            self.duplicates += 1
        else:
            self.imported += 1
            self.faces += result["faces_detected"]
            self.persons_created += result["persons_created"]


def find_photos(path: Path, extensions: t.Collection[str], *, recursive: bool
                ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files under ``path`` to import, sorted, and the ones skipped with a one-line reason.

    Whether a file is an image is decided by its bytes when it is decoded; here only the name
    rules a file out, so a photo named ``.JPG`` or ``.jpeg`` is taken and a ``.txt`` is not.
    """
    if not path.exists():
        raise ValidationError(f"No such file or folder: {path}", details={"path": str(path)})
    if path.is_file():
        candidates = [path]
    else:
        walked = (Path(root) / name for root, dirs, names in os.walk(path)
                  for name in names if recursive or Path(root) == path)
        candidates = sorted(walked)
    wanted = {"." + ext.lower().lstrip(".") for ext in extensions}
    photos, skipped = [], []
    for candidate in candidates:
        if candidate.name.startswith("."):
            skipped.append((candidate, "hidden file"))
        elif candidate.suffix.lower() not in wanted:
            skipped.append((candidate, f"not an image ({candidate.suffix or 'no extension'})"))
        else:
            photos.append(candidate)
    return photos, skipped


def filing_by_name(store: Store, album_name: str | None, section_name: str | None
                   ) -> tuple[str, str]:
    """Album and section ids for these names, created when missing; ``""`` for none.

    A section is looked up inside the album when one is given.
    """
    album_id = section_id = ""
    if album_name:
        name = catalog.clean_name(album_name, field="album")
        album = next((a for a in store.list_albums() if a["name"] == name), None)
        album_id = album["_id"] if album else catalog.create_album(store, name)["album_id"]
    if section_name:
        name = catalog.clean_name(section_name, field="section")
        sections = store.list_sections(album_id) if album_id else store.list_sections()
        section = next((s for s in sections if s["name"] == name
                        and s.get("album_id", "") == album_id), None)
        section_id = (section["_id"] if section else
                      catalog.create_section(store, name, album_id=album_id or None)["section_id"])
    return album_id, section_id


def import_photos(gallery: Gallery, photos: list[Path], *, album: str = "", section: str = "",
                  workers: int | None = None,
                  on_progress: Callable[[Progress], None] | None = None) -> Progress:
    """Upload ``photos`` in order through the batch path; returns the final counts.

    ``workers`` overrides ``INGEST_WORKERS`` for this import.
    """
    progress = Progress(total=len(photos))
    pool = IngestPool(workers) if workers else None

    def files() -> Iterator[tuple[str, t.Callable[[], bytes]]]:
        for photo in photos:
            yield str(photo), photo.read_bytes

    try:
        for result in upload.ingest_files(gallery, files(), album=album, section=section,
                                          pool=pool):
            progress.add(result)
            if on_progress is not None:
                on_progress(progress)
    finally:
        if pool is not None:
            pool.close()
    return progress
