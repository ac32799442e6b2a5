"""Images: placeholder until the faces issue lands."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("images", __name__)
