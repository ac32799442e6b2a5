"""JSON bodies nested too deeply are a 400 on every route, for any parser (issue 12, break 1)."""

from __future__ import annotations

import json

import pytest
from flask import Blueprint
from flask import request
from werkzeug.exceptions import BadRequest

from app import create_app
from routes import jsonbody
from tests.conftest import BASE_CONFIG
from tests.conftest import MISSING
from tests.conftest import assert_error

one_backend = pytest.mark.parametrize("store", ["mongomock"], indirect=True)

DEEP = 1100  # past Python's recursion limit: json.loads raises RecursionError


def arrays(levels: int) -> str:
    return "[" * levels + "]" * levels


def objects(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


BODIES = {
    "arrays": arrays(DEEP),
    "objects": objects(DEEP),
    "arrays in an object": '{"name": ' + arrays(DEEP) + "}",
    "just over the limit": objects(jsonbody.MAX_DEPTH + 1),
}
ROUTES = [("POST", "/albums/"), ("PUT", f"/persons/{MISSING}/rename"), ("POST", "/cluster/"),
          ("PUT", f"/images/{MISSING}"), ("PUT", f"/faces/{MISSING}/move-to-new")]


@one_backend
@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
@pytest.mark.parametrize("method, path", ROUTES, ids=[path for _, path in ROUTES])
def test_deep_json_is_400_on_every_route(client, method, path, body):
    response = client.open(path, method=method, data=body, content_type="application/json")
    assert_error(response, 400, "ValidationError")
    assert response.json["details"] == {"max_depth": jsonbody.MAX_DEPTH}


@one_backend
def test_the_process_serves_normally_after_deep_bodies(client):
    for body in BODIES.values():
        client.post("/albums/", data=body, content_type="application/json")
    created = client.post("/albums/", json={"name": "Holidays"})
    assert created.status_code == 201
    # Under the limit, the route answers as it always has.
    shallow = client.post("/albums/", data=objects(jsonbody.MAX_DEPTH),
                          content_type="application/json")
    assert_error(shallow, 400, "ValidationError")
    assert "'name'" in shallow.json["error"]
    # Brackets inside strings are text, not nesting.
    bracketed = client.post("/albums/", json={"name": "[" * 150})
    assert bracketed.status_code == 201 and bracketed.json["data"]["name"] == "[" * 150


@one_backend
def test_a_parser_that_bypasses_flask_is_protected_too(store):
    """webargs (apiflask) decodes with the standard json.loads; the hook runs first."""
    app = create_app(dict(BASE_CONFIG), store=store, environ={})
    bp = Blueprint("raw", __name__)

    @bp.post("/raw")
    def raw():
        return {"decoded": type(json.loads(request.get_data())).__name__}

    app.register_blueprint(bp)
    client = app.test_client()
    for body in BODIES.values():
        assert_error(client.post("/raw", data=body, content_type="application/json"), 400,
                     "ValidationError")
    assert client.post("/raw", json=[[1]]).json == {"decoded": "list"}


@one_backend
def test_the_provider_turns_recursion_into_a_decoding_error(app):
    deep = arrays(5 * DEEP)
    with pytest.raises(ValueError, match="too deeply"):
        app.json.loads(deep)
    # Request.get_json, past the hook: 400 when strict, None when silent.
    with app.test_request_context("/", method="POST", data=deep,
                                  content_type="application/json"):
        assert request.get_json(silent=True) is None
        with pytest.raises(BadRequest):
            request.get_json()


@pytest.mark.parametrize("value, expected", [
    (1, 0), ("[[[", 0), ([], 1), ({}, 1), ([[1], 2], 2), ({"a": [{"b": {}}]}, 4),
    ([1, [2, [3, [4]]], {}], 4),
])
def test_depth(value, expected):
    assert jsonbody.depth(value) == expected


def test_depth_stops_early_past_its_limit():
    deep = json.loads(arrays(500))
    assert jsonbody.depth(deep) == 500
    assert 10 < jsonbody.depth(deep, limit=10) < 500
