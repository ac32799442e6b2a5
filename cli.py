"""The ``flask gallery`` commands: what an operator runs from a shell.

A thin layer, like the routes: each command parses its options, calls one service function
and prints the result.
"""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup

from services import jobs
from services import repair
from services import taskqueue

gallery = AppGroup("gallery", help="Operate the face gallery.")


@gallery.command("repair")
def repair_command() -> None:
    """Finish or undo uploads and deletes a killed process left half done; take back jobs."""
    handles = current_app.extensions["face_gallery"]
    report = repair.run(handles.store)
    report["jobs"] = jobs.recover(handles)
    click.echo(json.dumps(report, indent=2, default=str))


@gallery.command("worker")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Jobs run at once; each analyses with INGEST_WORKERS processes.")
@click.option("--stop-with-parent", is_flag=True, hidden=True,
              help="Stop when the process that started this one ends (embedded worker).")
def worker_command(workers: int, stop_with_parent: bool) -> None:
    """Run background jobs until SIGTERM (jobs stop after their current file and wait in
    the queue) or SIGINT (stop now; the jobs are taken up again by the next worker)."""
    taskqueue.run_worker(current_app.extensions["face_gallery"], workers=workers,
                         stop_with_parent=stop_with_parent)
