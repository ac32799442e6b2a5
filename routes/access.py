"""Who may call the API and how often: API keys, rate limits, the reset guard, and the
security headers every response carries.

Everything is keyed on paths and endpoint names, so the resource blueprints carry no decorators;
``create_app`` calls :func:`init_app` once. What the settings mean is in README (Access).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
import typing as t

from flask import Flask
from flask import current_app
from flask import request
from flask_limiter import Limit
from flask_limiter import Limiter
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.serving import WSGIRequestHandler

from errors import AuthenticationError
from errors import ForbiddenError
from errors import RateLimitError
from routes.common import error_response

#: Paths anyone may read: the description, load balancers' health checks, the API docs.
PUBLIC_PATHS = frozenset({"/", "/health", "/docs", "/openapi.json"})
PUBLIC_PREFIXES = ("/docs/",)
#: Endpoints that cost seconds of CPU a request: they get RATELIMIT_HEAVY.
HEAVY_ENDPOINTS = frozenset({
    "images.upload_image", "images.upload_images", "images.search_by_image",
    "cluster.recluster_get", "cluster.recluster_post", "cluster.rollback_run",
})
RESET_ENDPOINT = "stats.reset_gallery"
HEALTH_ENDPOINT = "stats.health"

SERVER_HEADER = "face-gallery"
API_CSP = "default-src 'none'; frame-ancestors 'none'"
#: For HTML pages (the API docs): Swagger UI's own scripts and styles from /docs/, plus the
#: inline style and bootstrap script it writes into its page.
HTML_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'")

# Keys are kept and compared as SHA-256 digests: equal lengths, so the comparison takes the
# same time whatever the key's length, and the keys themselves stay out of the extension.
_KEYS = "face_gallery.api_keys"
_LIMITER = "face_gallery.limiter"


def init_app(app: Flask) -> None:
    """Wire the access rules into ``app``; call it after the request-id hook is registered."""
    app.extensions[_KEYS] = tuple(_digest(key) for key in app.config["API_KEYS"])
    # The limiter counts before the key is checked, so guessing keys is rate limited too.
    _init_limiter(app)
    app.before_request(_check_access)
    app.after_request(_add_security_headers)
    app.register_error_handler(AuthenticationError, _answer_unauthenticated)
    app.register_error_handler(RateLimitExceeded, _answer_rate_limited)


def _digest(key: str) -> bytes:
    # surrogatepass: any str encodes, so a strange header can never raise here.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_matches(presented: str, digests: t.Iterable[bytes]) -> bool:
    """Whether ``presented`` is one of the keys, compared in constant time with every key."""
    given = _digest(presented)
    matched = False
    for digest in digests:
        # No early exit: the time taken must not tell which key, or whether any, matched.
        matched |= hmac.compare_digest(given, digest)
    return matched


def presented_key() -> str | None:
    """The key in ``X-API-Key`` or ``Authorization: Bearer``, or None when neither is sent."""
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def caller() -> str:
    """Who makes this request, for records: ``key:`` and the first 8 hex digits of the
    key's SHA-256 (keys have no names, and the key itself is never stored), or
    ``anonymous`` when the server asks for no key."""
    key = presented_key()
    if key is None or not current_app.extensions[_KEYS]:
        return "anonymous"
    return "key:" + _digest(key).hex()[:8]


def is_public(path: str) -> bool:
    """Whether ``path`` is served without a key (the description, health, the API docs)."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _check_access() -> None:
    # A CORS preflight never carries credentials (browsers send it without them).
    if request.method == "OPTIONS":
        return
    digests = current_app.extensions[_KEYS]
    if digests and not is_public(request.path):
        key = presented_key()
        if key is None:
            raise AuthenticationError("API key required: send it in X-API-Key or as "
                                      "Authorization: Bearer <key>")
        if not key_matches(key, digests):
            raise AuthenticationError("Invalid API key")
    config = current_app.config
    if (request.endpoint == RESET_ENDPOINT and config["FLASK_ENV"] == "production"
            and not config["ALLOW_RESET"]):
        raise ForbiddenError("Reset is disabled in production; set ALLOW_RESET=true to allow it")


def _answer_unauthenticated(error: AuthenticationError) -> t.Any:
    response = error_response(error.message, type(error).__name__, error.code, error.details)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _init_limiter(app: Flask) -> None:
    config = app.config
    default, heavy = config["RATELIMIT_DEFAULT"], config["RATELIMIT_HEAVY"]
    if not config["RATELIMIT_ENABLED"] or not (default or heavy):
        return
    limits = []
    if default:
        limits.append(Limit(default))
    if heavy:
        # A default limit, counted per route like the others, skipped off the heavy routes:
        # flask-limiter keys decorated limits by the view function, which would need
        # decorators (or wrapped views) in every blueprint.
        limits.append(Limit(heavy, exempt_when=lambda: request.endpoint not in HEAVY_ENDPOINTS))
    limiter = Limiter(
        get_remote_address,
        default_limits=limits,
        # Named even when it is memory://, which flask-limiter otherwise warns about.
        storage_uri=config["RATELIMIT_STORAGE_URI"] or "memory://",
        # Redis down: count in this process's memory (logged) rather than fail every request.
        in_memory_fallback_enabled=True,
        # flask-limiter skips requests without an endpoint; unknown paths share one bucket
        # instead, so probing for routes (or keys, answered 401 before routing) is limited too.
        request_identifier=lambda: request.endpoint or "<no route>",
    )
    limiter.request_filter(_exempt_from_limits)
    limiter.init_app(app)
    app.extensions[_LIMITER] = limiter


def _exempt_from_limits() -> bool:
    # Health checks come from load balancers every few seconds; preflights cost nothing.
    return request.endpoint == HEALTH_ENDPOINT or request.method == "OPTIONS"


def _answer_rate_limited(error: RateLimitExceeded) -> t.Any:
    retry_after = 1
    current = current_app.extensions[_LIMITER].current_limit
    if current is not None:
        # The window's own end: RequestLimit.reset_at adds a second to it.
        retry_after = max(1, math.ceil(current.window.reset_time - time.time()))
    limit = str(error.limit.limit)
    failure = RateLimitError(f"Rate limit exceeded: {limit}; retry in {retry_after} s",
                             details={"limit": limit, "retry_after": retry_after})
    response = error_response(failure.message, type(failure).__name__, failure.code,
                              failure.details)
    response.headers["Retry-After"] = str(retry_after)
    return response


def _add_security_headers(response: t.Any) -> t.Any:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    # A page that sets its own policy (e.g. with script hashes) keeps it. Flask labels its
    # bodiless answers (to OPTIONS, 204s) text/html too: no page, so the strict policy.
    if "Content-Security-Policy" not in headers:
        page = (response.mimetype == "text/html" and request.method != "OPTIONS"
                and response.status_code != 204)
        headers["Content-Security-Policy"] = HTML_CSP if page else API_CSP
    # gunicorn always writes its own `Server: gunicorn` (no version) ahead of the app's headers
    # and has no setting to drop it (gunicorn/http/wsgi.py, Response.default_headers); a
    # second Server field would be a duplicate, so under gunicorn its one stands.
    if not request.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        headers["Server"] = SERVER_HEADER
    return response


class RequestHandler(WSGIRequestHandler):
    """The development server's handler, without its ``Server: Werkzeug/x Python/y`` line."""

    def send_response(self, code: int, message: str | None = None) -> None:
        # http.server's send_response minus the Server header: the app writes its own.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())
