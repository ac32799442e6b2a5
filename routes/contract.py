"""The published contract: ``/openapi.json`` (OpenAPI 3.1, built by apiflask from the schemas
the routes validate with) and the ``/docs`` page, whose Swagger UI assets come from the
``flask-swagger-ui`` package on this server, never from a CDN, so it works with no internet.
"""

from __future__ import annotations

import importlib.util
import typing as t
from pathlib import Path

from apiflask import APIFlask
from flask import send_from_directory

from routes.schemas import ID_PATTERN
from routes.schemas import UPDATES
from routes.schemas import Error

#: The answers any operation may give besides its own: bad input, no key, too many requests,
#: a bug, no database. Each operation adds its specific ones (404, 409, 413, 422, ...).
COMMON_ERRORS = {
    "400": "Invalid request: a bad parameter, field or id (`details.field` names it)",
    "401": "API keys are on and the request carries no valid key",
    "429": "Too many requests (`Retry-After` says when to retry)",
    "500": "A bug, logged with the request id",
    "503": "The database cannot be reached",
}
BODY_ERRORS = {"415": "The body is not of the documented media type"}
PUBLIC_PATHS = {"/", "/health"}


def settings() -> dict[str, t.Any]:
    """apiflask's settings for our envelopes and the offline docs page."""
    assets = "/docs/assets/"
    return {
        "OPENAPI_VERSION": "3.1.0",
        "INFO": {"description": "Upload photos; every face is found, grouped into persons "
                                "and searchable. Every answer is an envelope: "
                                "`{success, data, message, timestamp}`, or the error "
                                "envelope below.",
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "VALIDATION_ERROR_STATUS_CODE": 400,
        "VALIDATION_ERROR_DESCRIPTION": "Invalid request (`details.errors` lists each field)",
        "VALIDATION_ERROR_SCHEMA": Error,
        "HTTP_ERROR_SCHEMA": Error,
        "AUTO_SERVERS": False,
        "AUTO_OPERATION_ID": True,
        "DOCS_UI": "swagger-ui",
        "DOCS_FAVICON": assets + "favicon-32x32.png",
        "SWAGGER_UI_CSS": assets + "swagger-ui.css",
        "SWAGGER_UI_BUNDLE_JS": assets + "swagger-ui-bundle.js",
        "SWAGGER_UI_STANDALONE_PRESET_JS": assets + "swagger-ui-standalone-preset.js",
        "SWAGGER_UI_CONFIG": {"tryItOutEnabled": False, "displayRequestDuration": True},
    }


def swagger_ui_directory() -> Path:
    """Where flask-swagger-ui keeps the Swagger UI distribution (located, not imported:
    importing it would build a blueprint we do not use)."""
    spec = importlib.util.find_spec("flask_swagger_ui")
    if spec is None or spec.origin is None:
        raise RuntimeError("flask-swagger-ui is not installed (requirements.txt)")
    return Path(spec.origin).parent / "dist"


def init_app(app: APIFlask) -> None:
    """Serve the docs page's assets and finish the document: common errors, keys."""
    directory = swagger_ui_directory()

    @app.get("/docs/assets/<path:filename>", endpoint="docs_assets")
    @app.doc(hide=True)
    def docs_assets(filename: str) -> t.Any:
        return send_from_directory(directory, filename, max_age=86400)

    @app.spec_processor
    def complete(spec: dict[str, t.Any]) -> dict[str, t.Any]:
        return complete_spec(spec)


def _body_required(body: dict[str, t.Any], schemas: dict[str, t.Any]) -> bool:
    """A body is required when its schema requires a field or asks for at least one."""
    for media in body.get("content", {}).values():
        ref = media.get("schema", {}).get("$ref", "")
        schema = schemas.get(ref.rsplit("/", 1)[-1], {})
        if schema.get("required") or schema.get("minProperties"):
            return True
    return False


def complete_spec(spec: dict[str, t.Any]) -> dict[str, t.Any]:
    """Add what every operation shares: the common error answers and the API-key schemes."""
    components = spec.setdefault("components", {})
    error_ref = {"$ref": "#/components/schemas/Error"}
    components.setdefault("securitySchemes", {}).update({
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "When API_KEYS is set: one of the keys"},
        "Bearer": {"type": "http", "scheme": "bearer",
                   "description": "The same key as `Authorization: Bearer <key>`"},
    })
    schemas = components.get("schemas", {})
    for name in UPDATES:
        if name in schemas:
            schemas[name]["minProperties"] = 1
    # Optional when the server runs without keys: the empty requirement allows no key.
    spec["security"] = [{"ApiKey": []}, {"Bearer": []}, {}]
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            extra = dict(COMMON_ERRORS)
            if "requestBody" in operation:
                extra.update(BODY_ERRORS)
                operation["requestBody"]["required"] = _body_required(
                    operation["requestBody"], schemas)
                if "multipart/form-data" in operation["requestBody"]["content"]:
                    operation["requestBody"]["required"] = True  # the files are the request
            if path in PUBLIC_PATHS:
                operation["security"] = []
                extra.pop("401")
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter["name"].endswith("_id"):
                    parameter["schema"] = {"type": "string", "pattern": ID_PATTERN}
            for code, description in extra.items():
                operation["responses"].setdefault(code, {
                    "description": description,
                    "content": {"application/json": {"schema": error_ref}}})
    return spec
