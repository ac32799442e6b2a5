"""Face Gallery API: the application factory.

``create_app()`` reads and validates the configuration, registers one blueprint per resource,
the ``flask gallery`` commands, the access rules (``routes/access.py``: API keys, rate limits,
security headers) and the error handlers that give every failure the documented JSON
envelope. Importing this module builds nothing: ``wsgi.py`` builds the app gunicorn
serves, ``python app.py`` builds one, repairs the store, starts its upkeep thread (heartbeat
and background repair) and a jobs worker process, and serves it. The database and the face
engine are opened lazily, once per process, so gunicorn can fork workers safely (pymongo
clients must not cross a fork).
"""

from __future__ import annotations

import logging
import signal
import sys
import time
import typing as t
import uuid
from collections.abc import Mapping

from apiflask import APIFlask
from apiflask import HTTPError
from flask import Flask
from flask import g
from flask import request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge

import cli
import config as config_module
from errors import ConfigError
from errors import DatabaseConnectionError
from errors import FileSizeError
from errors import GalleryError
from routes import access
from routes import common
from routes import contract
from routes import jsonbody
from services import imaging
from services import repair
from services import upkeep
from services.context import Gallery
from services.context import check_settings
from services.storage import Store
from services.supervisor import WorkerProcess

__version__ = "0.3.0"

log = logging.getLogger("face_gallery")


class _RequestIdFilter(logging.Filter):
    """Put the current request id on every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import has_request_context

        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_face_gallery", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
        handler.addFilter(_RequestIdFilter())
        handler._face_gallery = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def create_app(config: Mapping[str, t.Any] | None = None, *, store: Store | None = None,
               environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app; ``config`` overrides settings, ``store`` injects a database (tests)."""
    settings = config_module.load_config(config, environ)
    # No static folder: the docs page's assets are served by routes.contract.
    app = APIFlask(__name__, title="Face Gallery API", version=__version__,
                   static_folder=None, json_errors=False)
    app.config.update(contract.settings())
    app.config.update(settings)
    app.config["APP_VERSION"] = __version__
    app.url_map.converters["id"] = common.IdConverter
    # Our provider answers JSON nested too deeply for Python's decoder as a 400, not a 500.
    app.json = jsonbody.JSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    _configure_logging(settings["LOG_LEVEL"])
    # Pillow's limit is process-wide: the app's (IMAGE_MAX_PIXELS), for every decode here.
    imaging.limit_pixels(settings["IMAGE_MAX_PIXELS"])

    # extensions
    app.extensions["face_gallery"] = Gallery(settings, store=store)
    CORS(app, origins=settings["CORS_ORIGINS"], methods=settings["CORS_METHODS"],
         allow_headers=settings["CORS_ALLOW_HEADERS"],
         expose_headers=["X-Request-ID", "Retry-After"])

    # blueprints
    from routes import albums
    from routes import cluster
    from routes import faces
    from routes import images
    from routes import jobs
    from routes import persons
    from routes import sections
    from routes import stats
    from routes import transfer

    app.register_blueprint(images.bp, url_prefix="/images")
    app.register_blueprint(persons.bp, url_prefix="/persons")
    app.register_blueprint(faces.bp, url_prefix="/faces")
    app.register_blueprint(albums.bp, url_prefix="/albums")
    app.register_blueprint(sections.bp, url_prefix="/sections")
    app.register_blueprint(cluster.bp, url_prefix="/cluster")
    app.register_blueprint(jobs.bp, url_prefix="/jobs")
    app.register_blueprint(stats.bp)
    app.register_blueprint(transfer.bp)
    contract.init_app(app)

    # commands
    app.cli.add_command(cli.gallery)

    _register_request_hooks(app)
    access.init_app(app)
    # After the key and rate checks: a caller without a key learns nothing about bodies.
    app.before_request(common.check_body_type)
    _register_error_handlers(app)
    return app


def _register_request_hooks(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        # Echo a caller's id only when it is short and printable: it lands in our logs.
        if incoming and len(incoming) <= 128 and incoming.isprintable():
            g.request_id = incoming
        else:
            g.request_id = "req_" + uuid.uuid4().hex
        g.started = time.perf_counter()

    # After the request id, so the 400 it may raise carries it.
    app.before_request(jsonbody.refuse_deep_json)

    @app.after_request
    def add_request_id(response: t.Any) -> t.Any:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        log.info("%s %s -> %s (%.1f ms)", request.method, request.path, response.status_code,
                 elapsed)
        return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(GalleryError)
    def handle_gallery_error(error: GalleryError) -> t.Any:
        if error.code >= 500:
            log.error("%s: %s", type(error).__name__, error.message)
        return common.error_response(error.message, type(error).__name__, error.code,
                                     error.details)

    @app.errorhandler(HTTPError)
    def handle_schema_error(error: HTTPError) -> t.Any:
        # apiflask raises these when a request fails its schema (status 400).
        if error.status_code == 400 and isinstance(error.detail, dict):
            return handle_gallery_error(common.validation_error(error.detail))
        return common.error_response(error.message or "Invalid request", "ValidationError"
                                     if error.status_code < 500 else "InternalServerError",
                                     error.status_code, error.detail or None)

    @app.errorhandler(RequestEntityTooLarge)
    def handle_too_large(error: RequestEntityTooLarge) -> t.Any:
        limit = app.config["MAX_CONTENT_LENGTH"]
        return handle_gallery_error(FileSizeError(
            f"File size exceeds maximum limit of {limit // (1024 * 1024)}MB",
            details={"max_content_length": limit}))

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException) -> t.Any:
        code = error.code or 500
        # webargs aborts a malformed JSON body with its complaint in ``data.messages``.
        messages = (getattr(error, "data", None) or {}).get("messages")
        if code == 400 and messages:
            return handle_gallery_error(common.validation_error(messages))
        kind = {404: "NotFoundError", 405: "MethodNotAllowedError",
                415: "UnsupportedMediaTypeError"}.get(code, "ValidationError" if code < 500
                                                      else "InternalServerError")
        response = common.error_response(error.description or error.name, kind, code)
        if code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> t.Any:
        log.exception("unhandled error")
        return common.error_response("An unexpected error occurred", "InternalServerError",
                                     500)


def repair_store(app: Flask) -> dict[str, t.Any]:
    """Finish or undo what a killed process left half done; returns what was changed.

    Run at start-up (``python app.py``, each gunicorn worker) and by ``flask gallery repair``.
    """
    # No sweep of stored bytes here: it lists every blob, and each gunicorn worker starts
    # this. The jobs worker (one a deployment) and `flask gallery repair` sweep.
    report = repair.run(app.extensions["face_gallery"].store, blob_grace_seconds=None)
    if any(repair.counts(report).values()) or "skipped" in report:
        log.warning("repaired half-written work: %s", report)
    return report


def repair_at_start(app: Flask) -> dict[str, t.Any] | None:
    """:func:`repair_store` for a process starting up: an unreachable database is logged, not
    fatal, so the app serves (503s and an unhealthy ``/health``) until the database is back."""
    try:
        return repair_store(app)
    except DatabaseConnectionError:
        # Nothing is lost by skipping: lists show ready images only, and a dead upload's hash
        # claim is cleared by the next upload of its bytes.
        log.error("database unreachable at start-up: crash repair skipped; it runs at the "
                  "next start or with `flask gallery repair`")
        return None


def start_upkeep(app: Flask) -> upkeep.Upkeep | None:
    """Start this serving process's upkeep thread: its heartbeat, and repair of what dead
    processes left every ``REPAIR_INTERVAL_SECONDS`` (none when 0). Called by what serves,
    after :func:`repair_at_start`; the factory never starts it."""
    return upkeep.start(app.extensions["face_gallery"])


def build_app() -> Flask:
    """The app from the environment, its settings checked as far as they can be without
    connecting (:func:`services.context.check_settings`). A configuration error ends the
    process with one line and status 3 (:func:`config.exit_for`), which also stops a gunicorn
    master whose worker this is."""
    try:
        check_settings(config_module.load_config())
        return create_app()
    except ConfigError as err:
        config_module.exit_for(err)


def start_jobs_worker(app: Flask) -> WorkerProcess | None:
    """Start the jobs worker process beside the server unless ``JOBS_WORKER=external``."""
    if app.config["JOBS_WORKER"] != "embedded":
        return None
    worker = WorkerProcess()
    worker.start()
    return worker


if __name__ == "__main__":
    # A shell that starts us in the background (cmd &) has Ctrl-C ignored, and the ignore is
    # inherited: take the default back so SIGINT stops the server and its jobs worker.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    served = build_app()
    repair_at_start(served)
    start_upkeep(served)
    jobs_worker = start_jobs_worker(served)
    try:
        served.run(host=served.config["HOST"], port=served.config["PORT"], debug=False,
                   threaded=True, request_handler=access.RequestHandler)
    finally:
        if jobs_worker is not None:
            jobs_worker.stop()
