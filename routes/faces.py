"""Faces: placeholder until the faces issue lands."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("faces", __name__)
