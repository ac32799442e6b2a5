"""The ``flask gallery`` commands: what an operator runs from a shell.

A thin layer, like the routes: each command parses its options, calls the services and prints
what they return. Long work shows progress: a bar on a terminal, plain lines otherwise (logs).
"""

from __future__ import annotations

import json
import sys
import time
import typing as t
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from errors import GalleryError
from services import blobs
from services import catalog
from services import exchange
from services import importer
from services import jobs
from services import people_import
from services import recognition
from services import repair
from services import taskqueue
from services import upkeep
from services import xmp
from services.context import Gallery

gallery = AppGroup("gallery", help="Operate the face gallery.")

#: Plain progress lines (not on a terminal) come at most this often.
PLAIN_EVERY_SECONDS = 5.0


def _handles() -> Gallery:
    return current_app.extensions["face_gallery"]


def _echo_json(data: t.Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@gallery.command("repair")
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
def repair_command(dry_run: bool) -> None:
    """Finish or undo uploads and deletes a killed process left half done; take back jobs.

    Prints the report (ids of what was changed, crops without a face removed), then one line
    of counts."""
    handles = _handles()
    report = repair.run(handles.store, dry_run=dry_run,
                        blob_grace_seconds=handles.settings["BLOB_SWEEP_GRACE_SECONDS"])
    report["jobs"] = jobs.recover(handles, dry_run=dry_run)
    _echo_json(report)
    changes = ", ".join(f"{key} {n}" for key, n in repair.counts(report).items())
    click.echo(f"{'would change' if dry_run else 'changed'}: {changes}")


blob_commands = AppGroup("blobs", help="Where photo and crop bytes are stored.")
gallery.add_command(blob_commands)


@blob_commands.command("migrate")
@click.option("--to", "target", required=True, type=click.Choice(blobs.STORES),
              help="The store to move every blob to.")
@click.option("--dry-run", is_flag=True, help="Read and verify every blob; move nothing.")
def migrate_blobs_command(target: str, dry_run: bool) -> None:
    """Move every photo, display copy and crop to another store, verifying each by sha256.

    Safe to interrupt and run again (it continues); the gallery serves throughout. Set
    BLOB_STORE to the same store so new uploads go there too. Exit code 1 when a blob
    could not be moved."""
    handles = _handles()
    started = time.monotonic()
    show = _CountBar("blob documents") if sys.stderr.isatty() else _CountLines("blob documents")
    report = blobs.migrate(handles.store, target, settings=handles.settings, dry_run=dry_run,
                           progress=lambda done, total: show(done, total, started))
    show.close()
    _echo_json(report)
    if report["failed"]:
        sys.exit(1)


@gallery.command("worker")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Jobs run at once; each analyses with INGEST_WORKERS processes.")
@click.option("--stop-with-parent", is_flag=True, hidden=True,
              help="Stop when the process that started this one ends (embedded worker).")
def worker_command(workers: int, stop_with_parent: bool) -> None:
    """Run background jobs until SIGTERM (jobs stop after their current file and wait in
    the queue) or SIGINT (stop now; the jobs are taken up again by the next worker)."""
    handles = _handles()
    # Its uploads claim work too: its heartbeat lets other machines judge them, and its own
    # background repair covers a server whose web workers are all busy.
    upkeep.start(handles)
    taskqueue.run_worker(handles, workers=workers, stop_with_parent=stop_with_parent)


@gallery.command("stats")
def stats_command() -> None:
    """Print the gallery's counts."""
    _echo_json(catalog.statistics(_handles().store))


@gallery.command("recluster")
@click.option("--eps", type=click.FloatRange(0.01, 1.0), default=None,
              help="Mean distance between groups that merge (default DBSCAN_EPS).")
@click.option("--min-samples", type=click.IntRange(1, 1000), default=None,
              help="Smaller groups without a fixed face are noise (default DBSCAN_MIN_SAMPLES).")
@click.option("--no-preserve-manual", is_flag=True, help="Let hand-placed faces move too.")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
def recluster_command(eps: float | None, min_samples: int | None,
                      no_preserve_manual: bool, dry_run: bool) -> None:
    """Re-group every face; names, ids and hand corrections are kept. The run is recorded
    (`by: cli`) and can be rolled back (`POST /cluster/runs/{number}/rollback`)."""
    handles = _handles()
    settings = handles.settings
    try:
        result = recognition.recluster(
            handles, eps=settings["DBSCAN_EPS"] if eps is None else eps,
            min_samples=settings["DBSCAN_MIN_SAMPLES"] if min_samples is None else min_samples,
            preserve_manual=not no_preserve_manual, by="cli", dry_run=dry_run)
    except GalleryError as err:
        raise click.ClickException(err.message) from err
    _echo_json(result)


@gallery.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--recursive", "-r", is_flag=True, help="Also import from sub-folders.")
@click.option("--album", default=None, help="File the photos in this album (made if missing).")
@click.option("--section", default=None,
              help="File the photos in this section (made if missing, inside --album).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes analysing photos (default INGEST_WORKERS).")
def import_command(path: Path, recursive: bool, album: str | None, section: str | None,
                   workers: int | None) -> None:
    """Import the photos in PATH (a file or a folder); files already stored are skipped.

    A PATH that is a JSON export document (``flask gallery export``; told by its content:
    a JSON object with ``"format": "face-gallery-export"``) is applied instead, as
    ``POST /import`` applies it, without that route's size limit; the other options are then
    not used."""
    handles = _handles()
    document = _export_document(path)
    if document is not None:
        _import_people(handles, document)
        return
    photos, skipped = importer.find_photos(path, handles.settings["ALLOWED_EXTENSIONS"],
                                           recursive=recursive)
    for skipped_path, reason in skipped:
        click.echo(f"skipped {skipped_path}: {reason}", err=True)
    try:
        album_id, section_id = importer.filing_by_name(handles.store, album, section)
    except GalleryError as err:
        raise click.ClickException(err.message) from err
    show = _TerminalBar() if sys.stderr.isatty() else _PlainLines()
    click.echo(f"importing {len(photos)} photos from {path}", err=True)
    progress = importer.import_photos(handles, photos, album=album_id, section=section_id,
                                      workers=workers, on_progress=show)
    show.close()
    click.echo(
        f"done in {_duration(progress.elapsed)}: {progress.imported} imported, "
        f"{progress.duplicates} already stored, {progress.failed} failed, "
        f"{len(skipped)} skipped; {progress.faces} faces, "
        f"{progress.persons_created} new persons ({progress.rate:.2f} photos/s)")
    if photos and progress.imported + progress.duplicates == 0:
        sys.exit(1)
    if not photos:
        click.echo("no photos found", err=True)
        sys.exit(1)


# -- export and import of the people data (issue 16) ----------------------------------------

@gallery.command("export")
@click.argument("path", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--xmp", "xmp_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Also write one XMP sidecar per photo (<sha256>.xmp, MWG "
                                 "face regions) into this folder.")
def export_command(path: Path, xmp_dir: Path | None) -> None:
    """Write the people data (persons, faces, corrections, albums, filing) to PATH as the
    JSON document GET /export streams; `flask gallery import PATH` applies it elsewhere."""
    handles = _handles()
    moment = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    with path.open("w", encoding="utf-8") as out:
        for chunk in exchange.export_document(handles.store, exported_at=moment):
            out.write(chunk)
    click.echo(f"exported to {path} ({path.stat().st_size} bytes)", err=True)
    if xmp_dir is not None:
        written = xmp.write_sidecars(handles.store, xmp_dir)
        click.echo(f"wrote {written} XMP sidecars to {xmp_dir}", err=True)


def _export_document(path: Path) -> t.Any:
    """The parsed export document at ``path``, or None when it is not one (photos)."""
    if not path.is_file():
        return None
    with path.open("rb") as source:
        head = source.read(4096)
    if not head.lstrip().startswith(b"{") or exchange.FORMAT.encode() not in head:
        return None
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:
        raise click.ClickException(f"{path} looks like an export document but is not valid "
                                   f"JSON: {err}") from err
    return document if isinstance(document, dict) and document.get(
        "format") == exchange.FORMAT else None


def _import_people(handles: Gallery, document: t.Any) -> None:
    try:
        report = people_import.import_document(handles.store, document)
    except GalleryError as err:
        raise click.ClickException(err.message) from err
    _echo_json(report)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _status(progress: importer.Progress) -> str:
    return (f"{progress.processed}/{progress.total} photos, {progress.rate:.2f}/s, "
            f"{progress.faces} faces, ETA {_duration(progress.eta_seconds)}")


def _failure_line(progress: importer.Progress) -> str | None:
    last = progress.last
    if last is None or last["success"]:
        return None
    return f"failed {last['filename']}: {last['error']}"


class _TerminalBar:
    """One line redrawn in place on stderr: a bar, counts, rate, faces and ETA."""

    width = 30

    def __call__(self, progress: importer.Progress) -> None:
        failure = _failure_line(progress)
        if failure:
            click.echo("\r\033[K" + failure, err=True)
        done = round(self.width * progress.processed / max(progress.total, 1))
        bar = "#" * done + "-" * (self.width - done)
        click.echo(f"\r\033[K[{bar}] {_status(progress)}", err=True, nl=False)

    def close(self) -> None:
        click.echo("", err=True)


class _CountBar:
    """A bar for work counted in items: done/total, rate and ETA."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, done: int, total: int, started: float) -> None:
        filled = round(_TerminalBar.width * done / max(total, 1))
        bar = "#" * filled + "-" * (_TerminalBar.width - filled)
        click.echo(f"\r\033[K[{bar}] {_count_status(self.what, done, total, started)}",
                   err=True, nl=False)

    def close(self) -> None:
        click.echo("", err=True)


class _CountLines(_CountBar):
    """Plain lines every few seconds and at the end, for logs."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self._last = 0.0

    def __call__(self, done: int, total: int, started: float) -> None:
        now = time.monotonic()
        if now - self._last >= PLAIN_EVERY_SECONDS or done == total:
            self._last = now
            click.echo(f"progress: {_count_status(self.what, done, total, started)}", err=True)

    def close(self) -> None:
        pass


def _count_status(what: str, done: int, total: int, started: float) -> str:
    elapsed = time.monotonic() - started
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate else 0.0
    return f"{done}/{total} {what}, {rate:.1f}/s, ETA {_duration(eta)}"


class _PlainLines:
    """A line every few seconds and at the end, for logs; failures as they happen."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, progress: importer.Progress) -> None:
        failure = _failure_line(progress)
        if failure:
            click.echo(failure, err=True)
        now = time.monotonic()
        if now - self._last >= PLAIN_EVERY_SECONDS or progress.processed == progress.total:
            self._last = now
            click.echo(f"progress: {_status(progress)}", err=True)

    def close(self) -> None:
        pass
