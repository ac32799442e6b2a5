"""The layering rules, read from the source with ast: routes -> services -> storage."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

DATABASE_MODULES = {"pymongo", "bson", "gridfs", "tinymongo", "mongomock"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


def test_services_know_nothing_of_flask():
    for path in python_files("services"):
        assert "flask" not in imported_modules(path), f"{path.name} imports flask"
        assert "werkzeug" not in imported_modules(path), f"{path.name} imports werkzeug"


def test_only_storage_touches_the_database_driver():
    for folder in ("services", "routes"):
        for path in python_files(folder):
            if path.name == "storage.py":
                continue
            found = imported_modules(path) & DATABASE_MODULES
            assert not found, f"{folder}/{path.name} imports {sorted(found)}"
    for name in ("app.py", "config.py", "errors.py"):
        assert not imported_modules(ROOT / name) & DATABASE_MODULES, name


def test_jobs_know_nothing_of_routes_or_flask():
    found = imported_modules(ROOT / "services" / "jobs.py") & {"routes", "flask", "werkzeug"}
    assert not found, f"services/jobs.py imports {sorted(found)}"


def test_only_the_task_queue_touches_huey():
    for folder in ("services", "routes"):
        for path in python_files(folder):
            if path.name != "taskqueue.py":
                assert "huey" not in imported_modules(path), f"{folder}/{path.name} imports huey"
    for name in ("app.py", "cli.py", "config.py", "wsgi.py", "gunicorn.conf.py"):
        assert "huey" not in imported_modules(ROOT / name), name


def test_only_access_touches_the_rate_limiter():
    """Limits are applied by endpoint name in routes/access.py: no blueprint decorates."""
    for folder in ("services", "routes"):
        for path in python_files(folder):
            if path.name != "access.py":
                assert "flask_limiter" not in imported_modules(path), f"{folder}/{path.name}"
    for name in ("app.py", "cli.py", "config.py", "wsgi.py"):
        assert "flask_limiter" not in imported_modules(ROOT / name), name


def test_routes_do_not_run_dlib_or_numpy():
    for path in python_files("routes"):
        assert not imported_modules(path) & {"dlib", "face_recognition", "numpy", "PIL"}, path


def test_face_recognition_package_imports():
    """The pkg_resources trap: face_recognition needs setuptools<81 to import at all."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module("face_recognition")
    assert callable(module.face_locations)
