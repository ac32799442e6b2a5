"""The service around the resources: description, health, stats, reset, envelopes, config."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from flask import Blueprint

from app import create_app
from errors import ConfigError
from errors import FaceDetectionError
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import MISSING
from tests.conftest import ROOT
from tests.conftest import assert_error

UNREACHABLE = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"

#: For tests of Flask, the envelopes and the headers, which no backend changes: they run on
#: mongomock only. Tests whose outcome goes through a query stay on every backend.
one_backend = pytest.mark.parametrize("store", ["mongomock"], indirect=True)


@one_backend
def test_root_describes_the_api(client):
    body = client.get("/").json
    assert body["success"] is True and body["timestamp"] and body["message"]
    data = body["data"]
    assert data["name"] == "Face Gallery API" and data["version"]
    assert "POST /images/upload" in data["endpoints"]["images"]
    assert data["docs"]


def test_health_reports_database(client, store):
    body = client.get("/health").json
    assert body["data"]["status"] == "healthy"
    assert body["data"]["database"] == {"reachable": True, "backend": store.backend}


@pytest.fixture
def unreachable():
    """A client of an app whose MongoDB does not answer; its pymongo client closed after."""
    app = create_app({**BASE_CONFIG, "MONGODB_URI": UNREACHABLE}, environ={})
    yield app.test_client()
    app.extensions["face_gallery"].close()


def test_unreachable_database_gives_503_not_a_crash(unreachable):
    health = unreachable.get("/health")
    assert_error(health, 503, "DatabaseConnectionError")
    assert health.json["details"]["status"] == "unhealthy"
    assert health.json["details"]["database"] == {"reachable": False, "backend": "mongodb"}
    image = {"file": (io.BytesIO(photos.blank_jpeg()), "b.jpg")}
    batch = {"files": [(io.BytesIO(photos.blank_jpeg()), "b.jpg")]}
    for method, path, body in [
        ("GET", "/albums/", None), ("POST", "/albums/", {"json": {"name": "A"}}),
        ("GET", "/persons/", None), ("GET", f"/images/{MISSING}", None), ("GET", "/stats/", None),
        ("GET", "/cluster/", None), ("DELETE", "/reset?confirm=true", None),
        ("POST", "/images/upload", {"data": image}),
        ("POST", "/images/upload-multiple", {"data": batch}),
    ]:
        response = unreachable.open(path, method=method, **(body or {}))
        assert_error(response, 503, "DatabaseConnectionError")
        assert response.json["error"] == "Database connection failed", path
        assert "Traceback" not in response.get_data(as_text=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", [
    [sys.executable, "app.py"],
    [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
], ids=["app.py", "gunicorn"])
def test_the_app_starts_while_the_database_is_unreachable(tmp_path, command):
    """The start-up repair finds no database: logged, and the server answers 503s."""
    port = _free_port()
    server = subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={"PATH": "/usr/bin:/bin", "MONGODB_URI": UNREACHABLE, "HOST": "127.0.0.1",
             "PORT": str(port), "DATA_DIR": str(tmp_path), "WEB_CONCURRENCY": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "the server stopped"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as ok:
                    status, body = ok.status, json.loads(ok.read())
                break
            except urllib.error.HTTPError as err:
                with err:
                    status, body = err.code, json.loads(err.read())
                break
            except OSError:  # not listening yet
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.2)
        assert status == 503 and body["error_type"] == "DatabaseConnectionError"
        assert body["details"]["database"] == {"reachable": False, "backend": "mongodb"}
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "crash repair skipped" in stderr


def test_stats_on_empty_gallery(client):
    data = client.get("/stats/").json["data"]
    assert data == {
        "total_persons": 0, "total_images": 0, "total_faces": 0, "total_albums": 0,
        "total_sections": 0, "images_with_faces": 0, "images_without_faces": 0,
        "manual_face_assignments": 0,
        "gallery_stats": {"face_coverage": 0.0, "avg_faces_per_image": 0.0,
                          "avg_faces_per_person": 0.0},
    }


def test_stats_count_albums_and_sections(client):
    client.post("/albums/", json={"name": "A"})
    client.post("/sections/", json={"name": "S"})
    data = client.get("/stats/").json["data"]
    assert (data["total_albums"], data["total_sections"]) == (1, 1)


def test_reset_needs_confirmation(client):
    client.post("/albums/", json={"name": "A"})
    refused = client.delete("/reset")
    assert_error(refused, 400, "ValidationError")
    assert "confirm=true" in refused.json["error"]
    assert_error(client.delete("/reset?confirm=false"), 400, "ValidationError")
    assert_error(client.delete("/reset?confirm=yes"), 400, "ValidationError")
    assert client.get("/albums/").json["data"]["total"] == 1

    assert client.delete("/reset?confirm=true").status_code == 200
    assert client.get("/albums/").json["data"]["total"] == 0
    client.post("/albums/", json={"name": "B"})
    assert_error(client.delete("/reset", json={"confirm": True}), 400, "ValidationError")
    done = client.delete("/reset?confirm=1")
    assert done.status_code == 200 and done.json["data"]["documents_deleted"]["albums"] == 1


@one_backend
def test_request_id_is_echoed_or_generated(client):
    assert client.get("/", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] \
        == "abc-123"
    generated = client.get("/albums/zzz")
    assert generated.headers["X-Request-ID"] == generated.json["request_id"]
    assert generated.json["request_id"].startswith("req_")


@one_backend
def test_http_errors_use_the_envelope(client):
    assert_error(client.get("/no-such-route"), 404, "NotFoundError")
    method = client.patch("/albums/")
    assert_error(method, 405, "MethodNotAllowedError")
    assert "GET" in method.headers["Allow"]


def test_user_mistakes_in_queries_are_400(client):
    for query in ("/persons/?q=%00", "/persons/?q=" + "x" * 201,
                  "/images/?date_to=9999-12-31T23:59:59-05:00",
                  "/images/?date_from=0001-01-01T00:00:00%2B01:00"):
        assert_error(client.get(query), 400, "ValidationError")
    assert client.get("/persons/?q=(a*").status_code == 200  # regex characters are literal
    assert_error(client.get("/images/search-by-image"), 405, "MethodNotAllowedError")
    assert_error(client.put(f"/faces/{MISSING}/move", json={"target": "x"}), 400,
                 "ValidationError")
    assert "target_person_id" in client.put(f"/faces/{MISSING}/move", json={}).json["error"]


@one_backend
def test_too_large_body_is_413(store):
    app = create_app({**BASE_CONFIG, "MAX_CONTENT_LENGTH": 2048}, store=store, environ={})
    response = app.test_client().post("/albums/", data=b"x" * 5000,
                                      content_type="application/json")
    assert_error(response, 413, "FileSizeError")


@one_backend
def test_unexpected_errors_are_500_without_traceback(store):
    app = create_app(dict(BASE_CONFIG), store=store, environ={})
    extra = Blueprint("boom", __name__)

    @extra.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    @extra.get("/noface")
    def noface():
        raise FaceDetectionError("No faces detected in the uploaded image")

    app.register_blueprint(extra)
    client = app.test_client()
    response = client.get("/boom")
    assert_error(response, 500, "InternalServerError")
    assert "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    assert_error(client.get("/noface"), 422, "FaceDetectionError")


@one_backend
def test_cors_headers_follow_config(client):
    response = client.get("/", headers={"Origin": "http://localhost:5173"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    foreign = client.get("/", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers


@pytest.mark.parametrize("name, value", [
    ("FACE_DETECTION_MODEL", "foo"), ("FACE_RECOGNITION_TOLERANCE", "1.5"),
    ("DBSCAN_EPS", "-0.1"), ("MAX_CONTENT_LENGTH", "lots"), ("IMAGE_QUALITY", "0"),
    ("PORT", "99999"), ("LOG_LEVEL", "loud"), ("DEBUG", "maybe"), ("THUMBNAIL_SIZE", "big"),
    ("ALLOWED_EXTENSIONS", "png,exe"), ("FLASK_ENV", "staging"), ("DBSCAN_MIN_SAMPLES", "0"),
    ("REDIS_URL", "redis://queue:99999"), ("REDIS_URL", "redis://queue/zero"),
])
def test_bad_config_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        create_app(environ={"FLASK_ENV": "testing", name: value})


def test_production_refuses_default_secret_key():
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(environ={"FLASK_ENV": "production"})
    app = create_app(environ={"FLASK_ENV": "production", "SECRET_KEY": "s3cr3t-value",
                              "API_KEYS": "a-key-of-16-chars-or-more"})
    assert app.config["DEBUG"] is False


def test_config_is_typed():
    app = create_app({"FLASK_ENV": "testing"}, environ={
        "FACE_RECOGNITION_TOLERANCE": "0.45", "IMAGE_MAX_DIMENSION": "1024",
        "CORS_ORIGINS": "http://a.example, http://b.example", "DEBUG": "true"})
    assert app.config["FACE_RECOGNITION_TOLERANCE"] == 0.45
    assert app.config["IMAGE_MAX_DIMENSION"] == 1024
    assert app.config["CORS_ORIGINS"] == ["http://a.example", "http://b.example"]
    assert app.config["DEBUG"] is True


def test_dotenv_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    from config import read_environment

    (tmp_path / ".env").write_text("IMAGE_QUALITY=70\nTHUMBNAIL_SIZE=120\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("THUMBNAIL_SIZE", "150")
    values = read_environment()
    assert values["IMAGE_QUALITY"] == "70" and values["THUMBNAIL_SIZE"] == "150"


@pytest.mark.parametrize("command", [
    [sys.executable, "-c", "import wsgi"],
    [sys.executable, "app.py"],
    [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
], ids=["wsgi", "app.py", "gunicorn"])
def test_bad_config_stops_the_process_with_one_line(tmp_path, command):
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "FACE_DETECTION_MODEL": "foo", "DATA_DIR": str(tmp_path),
             "PORT": "59731"},
    )
    assert result.returncode == 3  # gunicorn's "worker failed to boot" (config.exit_for)
    # gunicorn logs its own start first; the master then stops, no worker ever boots.
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and "Starting gunicorn" not in line]
    assert lines == ["configuration error: FACE_DETECTION_MODEL: expected one of hog, cnn "
                     "(got 'foo')"]


def test_importing_the_factory_builds_nothing():
    """``import app`` has no side effects: no app, no store, no data directory."""
    result = subprocess.run(
        [sys.executable, "-c", "import app; assert not hasattr(app, 'app')"], cwd=ROOT,
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "FACE_DETECTION_MODEL": "foo"})
    assert result.returncode == 0, result.stderr


def test_env_example_is_a_valid_configuration():
    from dotenv import dotenv_values

    from config import SETTINGS
    from config import load_config

    values = {k: v for k, v in dotenv_values(ROOT / ".env.example").items() if v is not None}
    settings = load_config(environ=values)
    assert settings["FACE_DETECTION_MODEL"] == "hog"
    documented = set(values) - {"FLASK_ENV", "WEB_CONCURRENCY", "GUNICORN_THREADS",
                                "GUNICORN_TIMEOUT"}
    assert documented == set(SETTINGS), "every setting is in .env.example and nothing else"


def test_config_defaults_are_the_measured_ones():
    """config.py and services/clustering.py state the same defaults (README explains them)."""
    from config import load_config
    from services import clustering

    settings = load_config({"FLASK_ENV": "testing"}, environ={})
    assert settings["FACE_RECOGNITION_TOLERANCE"] == clustering.DEFAULT_TOLERANCE
    assert settings["DBSCAN_EPS"] == clustering.DEFAULT_EPS
    assert settings["DBSCAN_MIN_SAMPLES"] == clustering.DEFAULT_MIN_SAMPLES


def test_image_compression_is_no_longer_read_and_says_so(caplog):
    from config import load_config

    settings = load_config(environ={"IMAGE_COMPRESSION": "true"})
    assert settings["STORE_ORIGINALS"] is True
    assert "IMAGE_COMPRESSION is no longer read" in caplog.text
    caplog.clear()
    assert load_config(environ={"IMAGE_COMPRESSION": "true", "STORE_ORIGINALS": "false"})[
        "STORE_ORIGINALS"] is False
    assert "IMAGE_COMPRESSION" not in caplog.text
