"""Start-up: every setting is checked before anything serves, and a bad one stops gunicorn
(master and workers) with one line instead of a restart loop (issue 12, break 2)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from errors import ConfigError
from services.context import check_settings
from tests.conftest import ROOT

GUNICORN = Path(sys.executable).parent / "gunicorn"
needs_gunicorn = pytest.mark.skipif(not GUNICORN.exists(), reason=f"no gunicorn at {GUNICORN}")


def settings(**changes: str) -> dict[str, str]:
    return {"MONGODB_URI": "", "REDIS_URL": "", "DATA_DIR": "", **changes}


def test_a_data_dir_that_cannot_be_made_is_a_config_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for data_dir in (str(blocker / "data"), str(blocker), ""):
        with pytest.raises(ConfigError, match="^DATA_DIR: "):
            check_settings(settings(DATA_DIR=data_dir))
    check_settings(settings(DATA_DIR=str(tmp_path / "new" / "data")))
    assert (tmp_path / "new" / "data").is_dir()


def test_data_dir_is_not_needed_with_mongodb_and_redis(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    check_settings(settings(MONGODB_URI="mongodb://db:27017", REDIS_URL="redis://q:6379/0",
                            DATA_DIR=str(blocker / "data")))
    with pytest.raises(ConfigError, match="DATA_DIR"):  # the job queue's SQLite file
        check_settings(settings(MONGODB_URI="mongodb://db:27017",
                                DATA_DIR=str(blocker / "data")))


@pytest.mark.parametrize("uri", ["foo://bar", "mongodb://", "mongodb://h:port",
                                 "mongodb+srv://h:27017/", "mongodb://u:s3cret@h:x/"])
def test_a_malformed_mongodb_uri_is_a_config_error_without_its_password(tmp_path, uri):
    with pytest.raises(ConfigError, match="^MONGODB_URI: ") as raised:
        check_settings(settings(MONGODB_URI=uri, DATA_DIR=str(tmp_path)))
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("uri", ["mongodb://a:1,b:2/db?replicaSet=rs", "mongomock://",
                                 "mongodb+srv://cluster.invalid/"])
def test_well_formed_uris_are_accepted_without_connecting(tmp_path, uri):
    started = time.monotonic()
    check_settings(settings(MONGODB_URI=uri, DATA_DIR=str(tmp_path)))
    assert time.monotonic() - started < 2  # no server, no DNS lookup


def _gunicorn(config_file: Path | str, env: dict[str, str], tmp_path: Path
              ) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [str(GUNICORN), "-c", str(config_file), "--no-control-socket", "-w", "1",
         "-b", "127.0.0.1:0", "wsgi:app"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
        env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data"),
             "JOBS_WORKER": "external", **env})
    return result, time.monotonic() - started


def _blocked_data_dir(tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("")
    return str(tmp_path / "a-file" / "data")


BAD = {
    "a value": ({"THUMBNAIL_SIZE": "abc"}, "THUMBNAIL_SIZE"),
    "DATA_DIR": ({"DATA_DIR": "<blocked>"}, "DATA_DIR"),
    "MONGODB_URI": ({"MONGODB_URI": "mongodb://h:port"}, "MONGODB_URI"),
    "REDIS_URL": ({"REDIS_URL": "redis://queue:99999"}, "REDIS_URL"),
}


@needs_gunicorn
@pytest.mark.parametrize("env, name", BAD.values(), ids=BAD.keys())
def test_gunicorn_master_stops_on_a_bad_setting_with_one_line(tmp_path, env, name):
    env = {k: _blocked_data_dir(tmp_path) if v == "<blocked>" else v for k, v in env.items()}
    result, seconds = _gunicorn(ROOT / "gunicorn.conf.py", env, tmp_path)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and "Starting gunicorn" not in line]
    assert len(lines) == 1 and lines[0].startswith(f"configuration error: {name}: "), lines
    assert seconds < 30


@needs_gunicorn
def test_a_worker_that_cannot_build_the_app_stops_the_master(tmp_path):
    """Without our gunicorn.conf.py (no check in the master), the worker exits with 3,
    gunicorn's "worker failed to boot", and the master stops instead of restarting it."""
    bare = tmp_path / "bare.conf.py"
    bare.write_text("# gunicorn's defaults: no hooks\n")
    result, seconds = _gunicorn(bare, {"DATA_DIR": _blocked_data_dir(tmp_path)}, tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("Booting worker") == 1
    assert result.stderr.count("configuration error: DATA_DIR: cannot create") == 1
    assert "Reason: Worker failed to boot." in result.stderr
    assert "Traceback" not in result.stderr
    assert seconds < 30
