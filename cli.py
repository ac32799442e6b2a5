"""The ``flask gallery`` commands: what an operator runs from a shell.

A thin layer, like the routes: each command parses its options, calls one service function
and prints the result.
"""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup

from services import repair

gallery = AppGroup("gallery", help="Operate the face gallery.")


@gallery.command("repair")
def repair_command() -> None:
    """Finish or undo uploads and deletes a killed process left half done."""
    report = repair.run(current_app.extensions["face_gallery"].store)
    click.echo(json.dumps(report, indent=2, default=str))
