"""Configuration: the only module that reads the environment.

Every variable is read from the process environment, then from a ``.env`` file in the working
directory (the environment wins), converted to its type and validated once at start-up. A bad
value raises :class:`errors.ConfigError` naming the variable; :func:`exit_for` turns that into
one line on stderr and exit status 3.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import typing as t
import urllib.parse
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path

import limits

from errors import ConfigError

DEFAULT_SECRET_KEY = "dev-secret-key-change-me"
#: Shorter keys are refused: a key is the only thing between the internet and the gallery.
MIN_API_KEY_LENGTH = 16
#: Settings whose values never appear in an error message (they end up in logs).
SECRET_SETTINGS = frozenset({"SECRET_KEY", "API_KEYS"})


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _csv(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if value < low or (high is not None and value > high):
            upper = f"..{high}" if high is not None else " or more"
            raise ValueError(f"expected an integer {low}{upper}")
        return value

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw.strip())
        if not low <= value <= high:
            raise ValueError(f"expected a number between {low} and {high}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _workers(raw: str) -> int:
    value = _int_range(0, 64)(raw)
    return value or os.cpu_count() or 1


def _text(raw: str) -> str:
    return raw.strip()


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if not value:
        return value
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL, or nothing")
    # The form is checked now; the server is reached on the first job (a bad port or database
    # number would otherwise surface only then, as a failed job).
    parts = urllib.parse.urlsplit(value)
    parts.port  # noqa: B018 -- reading it raises ValueError for a port that is no port
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise ValueError("the database after the host must be a number, as in "
                         "redis://host:6379/0")
    return value


def _api_key(key: str) -> str:
    # Visible ASCII only: a key travels in a header. No commas: API_KEYS is split on them, and
    # a key must read the same in the file and in the variable.
    if (len(key) < MIN_API_KEY_LENGTH or "," in key
            or not all(33 <= ord(ch) <= 126 for ch in key)):
        raise ValueError(f"every key must be at least {MIN_API_KEY_LENGTH} visible ASCII "
                         "characters, without spaces or commas")
    return key


def _api_keys(raw: str) -> list[str]:
    return [_api_key(key) for key in _csv(raw)]


def _rate_limit(raw: str) -> str:
    value = raw.strip()
    if value:
        try:
            limits.parse_many(value)
        except ValueError:
            raise ValueError("expected a limit such as '600 per minute' (several separated by "
                             "';'), or nothing") from None
    return value


_RATELIMIT_STORAGES = ("memory://", "redis://", "rediss://", "redis+unix://")


def _ratelimit_storage(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(_RATELIMIT_STORAGES):
        raise ValueError(f"expected a {', '.join(_RATELIMIT_STORAGES)} URL, or nothing")
    return value


_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "webp"}


def _extensions(raw: str) -> list[str]:
    values = [v.lower().lstrip(".") for v in _csv(raw)]
    unknown = sorted(set(values) - _EXTENSIONS)
    if unknown or not values:
        raise ValueError(f"supported extensions are {', '.join(sorted(_EXTENSIONS))}")
    return values


#: name -> (parser, default as it would appear in the environment)
SETTINGS: dict[str, tuple[Callable[[str], t.Any], str]] = {
    "SECRET_KEY": (_text, DEFAULT_SECRET_KEY),
    "DEBUG": (_bool, "false"),
    "HOST": (_text, "0.0.0.0"),
    "PORT": (_int_range(1, 65535), "5000"),
    "MONGODB_URI": (_text, ""),
    "DATABASE_NAME": (_text, "face_gallery"),
    "DATA_DIR": (_text, "./data"),
    # Bytes of one request (413 beyond): a batch of photos, or one large photo. Werkzeug
    # spools files over 500 KB to disk while it reads them. Bulk imports use jobs or the CLI.
    "MAX_CONTENT_LENGTH": (_int_range(1024), "104857600"),
    # Bytes of one photo, in any request, job or import (413 beyond).
    "MAX_UPLOAD_BYTES": (_int_range(1024), "52428800"),
    "ALLOWED_EXTENSIONS": (_extensions, "png,jpg,jpeg,gif,webp"),
    "FACE_RECOGNITION_TOLERANCE": (_float_range(0.0, 1.0), "0.59"),
    "DBSCAN_EPS": (_float_range(0.0, 1.0), "0.61"),
    "DBSCAN_MIN_SAMPLES": (_int_range(1, 1000), "1"),
    "FACE_DETECTION_MODEL": (_choice("hog", "cnn"), "hog"),
    "FACE_DETECTION_UPSAMPLE": (_int_range(0, 3), "1"),
    # Longer side HOG scans at most: larger photos are shrunk to it, smaller ones doubled
    # (FACE_DETECTION_UPSAMPLE times at most) while they stay within it; 0 = no limit.
    "FACE_DETECTION_MAX_DIMENSION": (_int_range(0, 20000), "4608"),
    "FACE_NUM_JITTERS": (_int_range(1, 100), "1"),
    "FACE_CROP_PADDING": (_float_range(0.0, 1.0), "0.1"),
    # 0 = one per core.
    "INGEST_WORKERS": (_workers, "0"),
    "IMAGE_MAX_DIMENSION": (_int_range(64, 20000), "1920"),
    "IMAGE_QUALITY": (_int_range(1, 100), "85"),
    # true: the uploaded bytes are kept as they came, plus a display copy fitted into
    # IMAGE_MAX_DIMENSION when larger; false: only that compressed copy (lossy; the seed's way).
    "STORE_ORIGINALS": (_bool, "true"),
    # Where photo and crop bytes go: files (DATA_DIR/blobs), gridfs (MongoDB) or inline (data
    # URIs in documents, the seed's schema); empty: gridfs with MONGODB_URI, else files.
    "BLOB_STORE": (_choice("", "files", "gridfs", "inline"), ""),
    # Bytes nothing refers to (left by a crash) are deleted by repair once this old.
    "BLOB_SWEEP_GRACE_SECONDS": (_float_range(60.0, 30 * 86400.0), "3600"),
    # Pixels of one photo, and of all the photos a process decodes at once (services/budget.py):
    # 48 MP (8000x6000, the largest common phone sensor) x ~11 bytes a pixel at the analysis'
    # peak is ~500 MiB a process (docs/ingest.md, "Memory").
    "IMAGE_MAX_PIXELS": (_int_range(1, 10**9), "48000000"),
    "THUMBNAIL_SIZE": (_int_range(16, 2000), "200"),
    "CORS_ORIGINS": (_csv, "http://localhost:5173,http://localhost:3000"),
    "CORS_METHODS": (_csv, "GET,POST,PUT,DELETE,OPTIONS"),
    "CORS_ALLOW_HEADERS": (_csv, "Content-Type,Authorization,X-Request-ID,X-API-Key"),
    # Access (routes/access.py). Keys from both are accepted; none means no key is asked for,
    # which production refuses unless ALLOW_ANONYMOUS is true.
    "API_KEYS": (_api_keys, ""),
    "API_KEYS_FILE": (_text, ""),
    "ALLOW_ANONYMOUS": (_bool, "false"),
    # Production only: DELETE /reset is refused (403) unless this is true.
    "ALLOW_RESET": (_bool, "false"),
    # Per client address and route; heavy: uploads, search by photo, re-clustering.
    "RATELIMIT_ENABLED": (_bool, "true"),
    "RATELIMIT_DEFAULT": (_rate_limit, "600 per minute"),
    "RATELIMIT_HEAVY": (_rate_limit, "30 per minute"),
    # Empty: counted in each process's memory; redis://...: shared by every process.
    "RATELIMIT_STORAGE_URI": (_ratelimit_storage, ""),
    "LOG_LEVEL": (lambda raw: _choice("debug", "info", "warning", "error", "critical")(raw).upper(),
                  "INFO"),
    # Background jobs: the queue is Redis when set, else a SQLite file in DATA_DIR.
    "REDIS_URL": (_redis_url, ""),
    # embedded: `python app.py` and gunicorn start one jobs worker; external: run your own.
    "JOBS_WORKER": (_choice("embedded", "external"), "embedded"),
    # Each serving process's upkeep thread (services/upkeep.py) undoes what dead processes
    # left half done this often, and writes its heartbeat; 0 = neither (repair at start only).
    "REPAIR_INTERVAL_SECONDS": (_float_range(0.0, 3600.0), "5"),
}


class Config:
    """Defaults shared by every environment."""

    ENV_NAME = "base"
    TESTING = False
    JSON_SORT_KEYS = False


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    DEBUG = True


class ProductionConfig(Config):
    ENV_NAME = "production"
    DEBUG = False
    SESSION_COOKIE_SECURE = True
    # The development front-ends' origins mean nothing here: trust only the origins named.
    CORS_ORIGINS = ""


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    MONGODB_URI = "mongomock://"
    DATABASE_NAME = "face_gallery_test"


def _without_password(raw: str) -> str:
    # The value goes to stderr and logs: a URL's password must not.
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", raw)


#: Exit status of a process stopped by a configuration error. 3 is gunicorn's "worker failed to
#: boot": a gunicorn worker that cannot build the app then stops the master, where any other
#: status has the master start the worker again, for ever.
CONFIG_ERROR_EXIT = 3


def exit_for(error: ConfigError) -> t.NoReturn:
    """End the process with the error on one line of stderr and :data:`CONFIG_ERROR_EXIT`."""
    print(f"configuration error: {error}", file=sys.stderr, flush=True)
    sys.exit(CONFIG_ERROR_EXIT)


CONFIG_CLASSES: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "production": ProductionConfig,
    "testing": TestingConfig,
}


def read_environment(dotenv_path: str | None = ".env") -> dict[str, str]:
    """The process environment layered over the ``.env`` file (the environment wins)."""
    values: dict[str, str] = {}
    if dotenv_path and os.path.exists(dotenv_path):
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ)
    return values


def load_config(
    overrides: Mapping[str, t.Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, t.Any]:
    """Build the validated settings mapping for ``app.config``.

    ``environ`` defaults to :func:`read_environment`; ``overrides`` (tests, scripts) win over
    everything and are validated like the environment when given as strings.
    """
    environ = read_environment() if environ is None else environ
    overrides = dict(overrides or {})
    env_name = str(overrides.get("FLASK_ENV") or environ.get("FLASK_ENV") or "development")
    env_name = env_name.strip().lower()
    if env_name not in CONFIG_CLASSES:
        choices = ", ".join(CONFIG_CLASSES)
        raise ConfigError(f"FLASK_ENV: expected one of {choices}, got {env_name!r}")
    config_class = CONFIG_CLASSES[env_name]

    settings: dict[str, t.Any] = {
        key: getattr(config_class, key) for key in dir(config_class) if key.isupper()
    }
    settings["FLASK_ENV"] = env_name
    for name, (parse, default) in SETTINGS.items():
        if name in overrides and not isinstance(overrides[name], str):
            settings[name] = overrides[name]
            continue
        class_default = getattr(config_class, name, None)
        raw = overrides.get(name, environ.get(name))
        if raw is None:
            raw = class_default if isinstance(class_default, str) else default
        try:
            settings[name] = parse(raw)
        except ValueError as err:
            shown = "" if name in SECRET_SETTINGS else f" (got {_without_password(raw)!r})"
            raise ConfigError(f"{name}: {err}{shown}") from None
    for name, value in overrides.items():
        if name not in SETTINGS:
            settings[name] = value
    if "IMAGE_COMPRESSION" in environ and "STORE_ORIGINALS" not in environ:
        logging.getLogger(__name__).warning(
            "IMAGE_COMPRESSION is no longer read: originals are kept (STORE_ORIGINALS=true); "
            "set STORE_ORIGINALS=false to store only a compressed copy")
    if "DEBUG" not in overrides and environ.get("DEBUG") is None:
        settings["DEBUG"] = bool(getattr(config_class, "DEBUG", False))

    if env_name == "production" and settings["SECRET_KEY"] == DEFAULT_SECRET_KEY:
        raise ConfigError("SECRET_KEY: production refuses the default key; set a random one")
    if not settings["SECRET_KEY"]:
        raise ConfigError("SECRET_KEY: must not be empty")

    keys = list(settings["API_KEYS"])
    if settings["API_KEYS_FILE"]:
        keys += read_api_keys(settings["API_KEYS_FILE"])
    settings["API_KEYS"] = list(dict.fromkeys(keys))
    if env_name == "production" and not keys and not settings["ALLOW_ANONYMOUS"]:
        raise ConfigError("API_KEYS: production refuses to serve without API keys; set API_KEYS "
                          "or API_KEYS_FILE (or ALLOW_ANONYMOUS=true to serve without)")
    return settings


def read_api_keys(path: str) -> list[str]:
    """The keys in the file ``path``, one a line; blank lines and ``#`` lines are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"API_KEYS_FILE: cannot read {path} ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"API_KEYS_FILE: {path} is not UTF-8 text") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(_api_key(line))
        except ValueError as err:
            # The line number, never the line: it may be a real key with a typo.
            raise ConfigError(f"API_KEYS_FILE: line {number} of {path}: {err}") from None
    if not keys:
        raise ConfigError(f"API_KEYS_FILE: no key in {path}")
    return keys
