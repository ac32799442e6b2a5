"""Access: API keys, production's start-up rules, the reset guard, rate limits, CORS and the
security headers, through the test client and through both real servers."""

from __future__ import annotations

import hmac
import http.client
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from flask import Blueprint
from flask import Response

from app import create_app
from errors import ConfigError
from routes import access
from tests.conftest import BASE_CONFIG
from tests.conftest import ROOT
from tests.conftest import assert_error
from tests.conftest import make_store

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")

KEY = "k-" + "a1b2c3d4" * 4
OTHER_KEY = "k-" + "e5f6a7b8" * 4
SECRET = "s3cr3t-test-value"
PRODUCTION = {**BASE_CONFIG, "FLASK_ENV": "production", "SECRET_KEY": SECRET}
#: Limits on, small enough to reach in a few requests.
LIMITED = {**BASE_CONFIG, "RATELIMIT_ENABLED": True, "RATELIMIT_DEFAULT": "3 per minute",
           "RATELIMIT_HEAVY": "1 per minute"}



@pytest.fixture
def store(tmp_path):
    """Keys, limits and headers do not depend on the database: mongomock only."""
    store = make_store("mongomock", tmp_path)
    yield store
    store.close()


def make_client(store, **config):
    return create_app({**BASE_CONFIG, **config}, store=store, environ={}).test_client()


@pytest.fixture
def keyed(store):
    """A development app that asks for one of two keys."""
    return make_client(store, API_KEYS=f"{KEY},{OTHER_KEY}")


def assert_unauthenticated(response):
    assert_error(response, 401, "AuthenticationError")
    assert response.headers["WWW-Authenticate"] == "Bearer"


# -- API keys ---------------------------------------------------------------------------------

def test_no_keys_configured_means_no_key_asked(store):
    assert make_client(store).get("/stats/").status_code == 200


@pytest.mark.parametrize("headers", [
    {"X-API-Key": KEY}, {"X-API-Key": OTHER_KEY}, {"Authorization": f"Bearer {KEY}"},
    {"Authorization": f"bearer {OTHER_KEY}"}, {"X-API-Key": f"  {KEY} "},
], ids=["x-api-key", "second-key", "bearer", "bearer-lowercase", "padded"])
def test_a_configured_key_opens_every_route(keyed, headers):
    assert keyed.get("/stats/", headers=headers).status_code == 200
    assert keyed.get("/persons/", headers=headers).status_code == 200
    created = keyed.post("/albums/", json={"name": "A"}, headers=headers)
    assert created.status_code == 201


@pytest.mark.parametrize("headers", [
    {}, {"X-API-Key": ""}, {"X-API-Key": KEY[:-1]}, {"X-API-Key": KEY + "x"},
    {"X-API-Key": KEY.upper()}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer"},
    {"Authorization": KEY}, {"X-API-Key": "k\u00e9" * 10},
], ids=["none", "empty", "prefix", "longer", "case", "basic", "bearer-empty", "no-scheme",
        "latin-1"])
def test_missing_or_wrong_key_is_401(keyed, headers):
    for method, path in [("GET", "/stats/"), ("GET", "/persons/"), ("POST", "/albums/"),
                         ("DELETE", "/reset?confirm=true"), ("GET", "/images/x/file")]:
        assert_unauthenticated(keyed.open(path, method=method, headers=headers))
    # Nothing was written, nothing reset.
    assert keyed.get("/albums/", headers={"X-API-Key": KEY}).json["data"]["total"] == 0


def test_401_says_whether_the_key_was_missing_or_wrong(keyed):
    assert "X-API-Key" in keyed.get("/stats/").json["error"]
    assert keyed.get("/stats/", headers={"X-API-Key": "w" * 20}).json["error"] == \
        "Invalid API key"


def test_unknown_paths_need_a_key_too(keyed):
    """Without a key nothing about the routes shows: an unknown path is 401, not 404."""
    assert_unauthenticated(keyed.get("/no-such-route"))
    assert_error(keyed.get("/no-such-route", headers={"X-API-Key": KEY}), 404, "NotFoundError")


@pytest.mark.parametrize("path", ["/", "/health", "/docs", "/docs/", "/docs/swagger-ui.css",
                                  "/openapi.json"])
def test_public_paths_need_no_key(keyed, path):
    response = keyed.get(path)
    assert response.status_code != 401, path
    if path in ("/", "/health"):
        assert response.status_code == 200


@pytest.mark.parametrize("path", ["/docsx", "/health/", "/stats", "/openapi.json/x"])
def test_near_public_paths_are_not_public(keyed, path):
    assert_unauthenticated(keyed.get(path))


def test_recluster_by_get_needs_a_key(keyed):
    assert_unauthenticated(keyed.get("/cluster/"))
    assert_unauthenticated(keyed.post("/cluster/"))
    assert keyed.get("/cluster/", headers={"X-API-Key": KEY}).status_code == 200


def test_cors_preflight_needs_no_key(keyed):
    response = keyed.options("/persons/", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "X-API-Key"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "x-api-key" in response.headers["Access-Control-Allow-Headers"].lower()


def test_every_key_is_compared(store, monkeypatch):
    """Constant time: the presented key is compared with every key, even after a match."""
    keys = [KEY, OTHER_KEY, "k-" + "c" * 30]
    client = make_client(store, API_KEYS=",".join(keys))
    calls = []
    compare = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", counting)
    for presented in (KEY, "w" * 20):
        calls.clear()
        client.get("/stats/", headers={"X-API-Key": presented})
        assert len(calls) == len(keys)
        # Digests of equal length: the key's length cannot show in the timing either.
        assert {len(a) for a, _ in calls} | {len(b) for _, b in calls} == {32}


def test_keys_never_reach_the_logs(store, caplog, capfd):
    client = make_client(store, API_KEYS=KEY, LOG_LEVEL="DEBUG")
    wrong = "w-" + "9" * 30
    with caplog.at_level(logging.DEBUG):
        client.get("/stats/", headers={"X-API-Key": KEY})
        client.get("/stats/", headers={"Authorization": f"Bearer {KEY}"})
        client.get("/stats/", headers={"X-API-Key": wrong})
        client.get(f"/stats/?api_key={wrong}")
    logged = caplog.text + "".join(capfd.readouterr())
    assert "GET /stats/ -> 200" in caplog.text and "GET /stats/ -> 401" in caplog.text
    assert KEY not in logged and wrong not in logged


# -- keys from a file, and the configuration's rules -------------------------------------------

def test_keys_file_skips_blank_lines_and_comments(store, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# the phone app\n{KEY}\n\n   \n  # rotated 2026-11\n  {OTHER_KEY}  \n")
    client = make_client(store, API_KEYS_FILE=str(keys_file))
    assert client.application.config["API_KEYS"] == [KEY, OTHER_KEY]
    for key in (KEY, OTHER_KEY):
        assert client.get("/stats/", headers={"X-API-Key": key}).status_code == 200
    assert_unauthenticated(client.get("/stats/", headers={"X-API-Key": "# the phone app"}))


def test_keys_from_the_variable_and_the_file_add_up(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{OTHER_KEY}\n{KEY}\n")
    app = create_app(environ={"FLASK_ENV": "testing", "API_KEYS": KEY,
                              "API_KEYS_FILE": str(keys_file)})
    assert app.config["API_KEYS"] == [KEY, OTHER_KEY]


@pytest.mark.parametrize("content, message", [
    (None, "API_KEYS_FILE: cannot read"),
    ("# only a comment\n\n", "API_KEYS_FILE: no key in"),
    (f"{KEY}\nshort-key\n", "API_KEYS_FILE: line 2 of"),
    (f"{KEY} {OTHER_KEY}\n", "API_KEYS_FILE: line 1 of"),
    (f"# keys\n{KEY},{OTHER_KEY}\n", "API_KEYS_FILE: line 2 of"),
], ids=["missing", "empty", "short", "two-on-a-line", "comma"])
def test_bad_keys_file_stops_the_app(tmp_path, content, message):
    keys_file = tmp_path / "keys"
    if content is not None:
        keys_file.write_text(content)
    with pytest.raises(ConfigError, match=message) as raised:
        create_app(environ={"FLASK_ENV": "testing", "API_KEYS_FILE": str(keys_file)})
    assert KEY not in str(raised.value) and "short-key" not in str(raised.value)


@pytest.mark.parametrize("value", ["short", f"{KEY},tiny", f"{KEY[:8]} {KEY[8:]}",
                                   KEY + "\u00e9"])
def test_bad_api_keys_are_refused_without_echoing_them(value):
    with pytest.raises(ConfigError, match="API_KEYS: every key must be at least 16") as raised:
        create_app(environ={"FLASK_ENV": "testing", "API_KEYS": value})
    assert "got" not in str(raised.value) and KEY[:8] not in str(raised.value)


def test_production_refuses_to_start_without_keys():
    with pytest.raises(ConfigError, match="API_KEYS: production refuses to serve without"):
        create_app(environ={"FLASK_ENV": "production", "SECRET_KEY": SECRET})
    with pytest.raises(ConfigError, match="API_KEYS"):
        create_app(environ={"FLASK_ENV": "production", "SECRET_KEY": SECRET,
                            "ALLOW_ANONYMOUS": "false"})
    with pytest.raises(ConfigError, match="API_KEYS"):
        create_app(environ={"FLASK_ENV": "production", "SECRET_KEY": SECRET, "API_KEYS": " , "})


def test_production_serves_anonymously_only_when_told(store):
    client = create_app({**PRODUCTION, "ALLOW_ANONYMOUS": "true"}, store=store,
                        environ={}).test_client()
    assert client.get("/stats/").status_code == 200
    # Keys given as well: they are asked for; ALLOW_ANONYMOUS only lets the app start without.
    keyed = create_app({**PRODUCTION, "ALLOW_ANONYMOUS": "true", "API_KEYS": KEY}, store=store,
                       environ={}).test_client()
    assert_unauthenticated(keyed.get("/stats/"))


@pytest.mark.parametrize("command", [
    [sys.executable, "-c", "import wsgi"],
    [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
], ids=["wsgi", "gunicorn"])
def test_production_without_keys_stops_the_process_with_one_line(tmp_path, command):
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "FLASK_ENV": "production", "SECRET_KEY": SECRET,
             "DATA_DIR": str(tmp_path), "PORT": "59732"})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and "Starting gunicorn" not in line]
    assert lines == ["configuration error: API_KEYS: production refuses to serve without API "
                     "keys; set API_KEYS or API_KEYS_FILE (or ALLOW_ANONYMOUS=true to serve "
                     "without)"]


# -- reset in production ----------------------------------------------------------------------

def test_reset_in_production_needs_allow_reset(store):
    client = create_app({**PRODUCTION, "API_KEYS": KEY}, store=store, environ={}).test_client()
    headers = {"X-API-Key": KEY}
    client.post("/albums/", json={"name": "A"}, headers=headers)
    assert_unauthenticated(client.delete("/reset?confirm=true"))
    refused = client.delete("/reset?confirm=true", headers=headers)
    assert_error(refused, 403, "ForbiddenError")
    assert "ALLOW_RESET" in refused.json["error"]
    assert client.get("/albums/", headers=headers).json["data"]["total"] == 1

    allowed = create_app({**PRODUCTION, "API_KEYS": KEY, "ALLOW_RESET": "true"}, store=store,
                         environ={}).test_client()
    assert allowed.delete("/reset?confirm=true", headers=headers).status_code == 200
    assert allowed.get("/albums/", headers=headers).json["data"]["total"] == 0


def test_reset_outside_production_needs_no_allow_reset(store):
    assert make_client(store).delete("/reset?confirm=true").status_code == 200


# -- rate limits ------------------------------------------------------------------------------

def assert_rate_limited(response):
    assert_error(response, 429, "RateLimitError")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response.json["details"]["retry_after"] == retry_after


def test_default_limit_per_route(store):
    client = make_client(store, **LIMITED)
    assert [client.get("/stats/").status_code for _ in range(3)] == [200] * 3
    limited = client.get("/stats/")
    assert_rate_limited(limited)
    assert limited.json["details"]["limit"] == "3 per 1 minute"
    # Counted per route: another route still answers.
    assert client.get("/persons/").status_code == 200


@pytest.mark.parametrize("method, path", [
    ("POST", "/images/upload"), ("POST", "/images/upload-multiple"),
    ("POST", "/images/search-by-image"), ("POST", "/cluster/"), ("GET", "/cluster/"),
])
def test_heavy_routes_get_the_heavy_limit(store, method, path):
    client = make_client(store, **LIMITED)
    # The first is answered (a JSON body to an upload route is 415: no dlib work needed).
    assert client.open(path, method=method, json={}).status_code != 429
    assert_rate_limited(client.open(path, method=method, json={}))
    # The heavy routes count apart, and the others keep the default.
    assert client.get("/stats/").status_code == 200


def test_health_and_preflights_are_not_limited(store):
    client = make_client(store, **LIMITED)
    assert {client.get("/health").status_code for _ in range(10)} == {200}
    preflight = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"}
    assert {client.options("/cluster/", headers=preflight).status_code
            for _ in range(5)} == {200}
    assert client.post("/cluster/").status_code == 200


def test_unknown_paths_share_a_limit(store):
    """Probing for routes (or, with keys, guessing them) is limited like any route."""
    client = make_client(store, **LIMITED, API_KEYS=KEY)
    statuses = [client.get(f"/probe-{n}", headers={"X-API-Key": f"guess-{n:016d}"}).status_code
                for n in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_limits_can_be_turned_off(store):
    for off in ({"RATELIMIT_ENABLED": "false"}, {"RATELIMIT_DEFAULT": "", "RATELIMIT_HEAVY": ""}):
        client = make_client(store, **{**LIMITED, **off})
        assert {client.get("/stats/").status_code for _ in range(5)} == {200}
        assert {client.get("/cluster/").status_code for _ in range(3)} == {200}
    only_heavy = make_client(store, **{**LIMITED, "RATELIMIT_DEFAULT": ""})
    assert {only_heavy.get("/stats/").status_code for _ in range(5)} == {200}
    only_heavy.get("/cluster/")
    assert_rate_limited(only_heavy.get("/cluster/"))


def test_limits_apply_in_production(store):
    client = create_app({**PRODUCTION, **LIMITED, "FLASK_ENV": "production", "API_KEYS": KEY},
                        store=store, environ={}).test_client()
    headers = {"X-API-Key": KEY}
    assert [client.get("/stats/", headers=headers).status_code for _ in range(4)] == \
        [200, 200, 200, 429]


@pytest.mark.parametrize("name, value", [
    ("RATELIMIT_DEFAULT", "lots"), ("RATELIMIT_HEAVY", "30 per fortnight"),
    ("RATELIMIT_STORAGE_URI", "mongodb://localhost"), ("RATELIMIT_ENABLED", "sometimes"),
    ("ALLOW_RESET", "perhaps"), ("ALLOW_ANONYMOUS", "2"),
])
def test_bad_access_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        create_app(environ={"FLASK_ENV": "testing", name: value})


def test_limit_settings_are_typed():
    app = create_app(environ={"FLASK_ENV": "testing", "RATELIMIT_DEFAULT": "10/second; 600/hour",
                              "RATELIMIT_ENABLED": "no"})
    assert app.config["RATELIMIT_DEFAULT"] == "10/second; 600/hour"
    assert app.config["RATELIMIT_ENABLED"] is False
    assert app.config["RATELIMIT_HEAVY"] == "30 per minute"


def test_unreachable_limit_storage_falls_back_to_memory(store, caplog):
    client = make_client(store, **LIMITED, RATELIMIT_STORAGE_URI="redis://127.0.0.1:9/0")
    with caplog.at_level(logging.WARNING):
        assert [client.get("/stats/").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert "falling back to in-memory storage" in caplog.text


@pytest.mark.skipif(not TEST_REDIS_URL,
                    reason="TEST_REDIS_URL is not set: no Redis server to test on")
def test_limits_are_shared_through_redis(store):
    """Two apps (two gunicorn workers, or two machines) count in one place."""
    import redis

    prefix = f"face-gallery-test-{uuid.uuid4().hex}"
    config = {**LIMITED, "RATELIMIT_STORAGE_URI": TEST_REDIS_URL, "RATELIMIT_KEY_PREFIX": prefix}
    first, second = (make_client(store, **config) for _ in range(2))
    try:
        statuses = [client.get("/stats/").status_code for client in (first, second, first)]
        assert statuses == [200, 200, 200]
        assert_rate_limited(second.get("/stats/"))
        assert first.post("/cluster/").status_code == 200
        assert_rate_limited(second.post("/cluster/"))
    finally:
        server = redis.Redis.from_url(TEST_REDIS_URL)
        stored = list(server.scan_iter(match=f"*{prefix}*"))
        if stored:
            server.delete(*stored)
        server.close()
    assert stored, "the limits were not counted in Redis"


# -- CORS -------------------------------------------------------------------------------------

def test_production_trusts_no_origin_unless_named(store):
    client = create_app({**PRODUCTION, "API_KEYS": KEY}, store=store, environ={}).test_client()
    for origin in ("http://localhost:5173", "http://localhost:3000", "http://evil.example"):
        response = client.get("/", headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in response.headers, origin
    named = create_app({**PRODUCTION, "API_KEYS": KEY, "CORS_ORIGINS": "https://photos.example"},
                       store=store, environ={}).test_client()
    allowed = named.get("/", headers={"Origin": "https://photos.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://photos.example"
    assert "Access-Control-Allow-Origin" not in named.get(
        "/", headers={"Origin": "http://localhost:5173"}).headers


def test_development_keeps_the_local_origins_and_allows_the_key_header(store):
    client = make_client(store)
    assert client.application.config["CORS_ORIGINS"] == ["http://localhost:5173",
                                                         "http://localhost:3000"]
    preflight = client.options("/stats/", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-api-key, authorization"})
    assert preflight.headers["Access-Control-Allow-Headers"].lower() == "authorization, x-api-key"


def test_retry_after_is_readable_cross_origin(store):
    client = make_client(store, **LIMITED)
    response = client.get("/", headers={"Origin": "http://localhost:5173"})
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


# -- security headers -------------------------------------------------------------------------

def assert_api_headers(response):
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Content-Security-Policy"] == access.API_CSP


@pytest.fixture
def pages(store):
    """A keyed app: its docs page (public), and a page with its own policy."""
    app = create_app({**BASE_CONFIG, "API_KEYS": KEY}, store=store, environ={})
    extra = Blueprint("pages", __name__)

    @extra.get("/strict")
    def strict_page():
        return Response("<p>x</p>", mimetype="text/html",
                        headers={"Content-Security-Policy": "default-src 'none'"})

    app.register_blueprint(extra)
    return app.test_client()


def test_every_response_carries_the_security_headers(keyed):
    headers = {"X-API-Key": KEY}
    for response in (keyed.get("/"), keyed.get("/stats/", headers=headers),
                     keyed.get("/stats/"), keyed.get("/nope", headers=headers),
                     keyed.patch("/albums/", headers=headers),
                     keyed.options("/albums/", headers={"Origin": "http://localhost:5173",
                                                        "Access-Control-Request-Method": "GET"})):
        assert_api_headers(response)
        assert response.headers["Server"] == "face-gallery"


def test_rate_limited_and_forbidden_responses_carry_them_too(store):
    client = create_app({**PRODUCTION, **LIMITED, "FLASK_ENV": "production", "API_KEYS": KEY},
                        store=store, environ={}).test_client()
    forbidden = client.delete("/reset?confirm=true", headers={"X-API-Key": KEY})
    assert forbidden.status_code == 403
    assert_api_headers(forbidden)
    client.post("/cluster/", headers={"X-API-Key": KEY})
    limited = client.post("/cluster/", headers={"X-API-Key": KEY})
    assert limited.status_code == 429
    assert_api_headers(limited)


def test_html_pages_get_the_page_policy(pages):
    page = pages.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"] == access.HTML_CSP
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1) for part in access.HTML_CSP.split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    # Everything the page loads comes from this server, under a policy that allows 'self'.
    assert "'self'" in policy["script-src"] and "'self'" in policy["style-src"]
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.get_data(as_text=True)):
        assert asset.startswith("/docs/"), asset
        loaded = pages.get(asset)
        assert loaded.status_code == 200, asset
        loaded.close()
    # A page with its own policy keeps it (the key is asked for: /strict is not public).
    strict = pages.get("/strict", headers={"X-API-Key": KEY})
    assert strict.headers["Content-Security-Policy"] == "default-src 'none'"


# -- through the real servers -----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(port: int, path: str, headers: dict[str, str] | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheaders()
    finally:
        connection.close()


@pytest.mark.parametrize("command, server", [
    ([sys.executable, "app.py"], "face-gallery"),
    ([str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
     "gunicorn"),
], ids=["app.py", "gunicorn"])
def test_real_servers_send_one_server_header_without_versions(tmp_path, command, server):
    """What goes over the wire: one Server field naming no version, the security headers,
    keys asked for, and neither server's logs showing a key."""
    port = _free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=stdout, stderr=stderr,
            env={"PATH": "/usr/bin:/bin", "FLASK_ENV": "production", "SECRET_KEY": SECRET,
                 "API_KEYS": KEY, "HOST": "127.0.0.1", "PORT": str(port),
                 "DATA_DIR": str(tmp_path / "data"), "WEB_CONCURRENCY": "1",
                 "JOBS_WORKER": "external", "LOG_LEVEL": "DEBUG"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, err.read_text()
            try:
                status, headers = _get(port, "/health")
                break
            except OSError:  # not listening yet
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.2)
        assert status == 200
        unauthenticated, _ = _get(port, "/stats/")
        authenticated, stats_headers = _get(port, "/stats/", {"X-API-Key": KEY})
        assert (unauthenticated, authenticated) == (401, 200)
        for found in (headers, stats_headers):
            servers = [value for name, value in found if name.lower() == "server"]
            assert servers == [server]
            assert not re.search(r"\d", servers[0])
            values = {name.lower(): value for name, value in found}
            assert values["x-content-type-options"] == "nosniff"
            assert values["content-security-policy"] == access.API_CSP
            assert values["referrer-policy"] == "no-referrer"
    finally:
        process.terminate()
        process.wait(timeout=30)
    logs = out.read_text() + err.read_text()
    assert "/stats/" in logs  # the request lines were logged, without the key
    assert KEY not in logs
