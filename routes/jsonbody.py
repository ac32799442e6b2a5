"""JSON request bodies: a decoder that answers input nested too deeply as a bad request, and a
check that refuses such bodies before any parser sees them.

Python's json module recurses once per level of nesting, so a body of a thousand ``[``
raises ``RecursionError``, which Flask and webargs alike let through as a 500. Two layers:

* :class:`JSONProvider` (``app.json``) turns that ``RecursionError`` into a ``ValueError``,
  what ``request.get_json`` expects from a decoder: a 400, or None with ``silent=True``.
* :func:`refuse_deep_json` (a ``before_request`` hook) refuses a body nested more than
  ``MAX_DEPTH`` levels with a 400 ``ValidationError``. Parsers that bypass ``app.json``
  (webargs calls the standard ``json.loads`` itself) then never see a body deep enough to
  exhaust the stack, whatever depth the stack already has when they run.
"""

from __future__ import annotations

import typing as t

from flask import current_app
from flask import request
from flask.json.provider import DefaultJSONProvider

from errors import ValidationError

__all__ = ["MAX_DEPTH", "JSONProvider", "JSONTooDeep", "depth", "refuse_deep_json"]

#: Deepest nesting of arrays and objects a request body may have. Our bodies are one or two
#: levels deep; Python's recursion limit (1,000 frames) is far above.
MAX_DEPTH = 64


class JSONTooDeep(ValueError):
    """The JSON text is nested too deeply to decode."""


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, with nesting too deep for Python's decoder a ``ValueError``."""

    def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError as err:
            raise JSONTooDeep("JSON nested too deeply to decode") from err


def depth(value: t.Any, *, limit: int | None = None) -> int:
    """How deeply arrays and objects nest in a decoded JSON value (a scalar is 0).

    Walks without recursion; stops early, returning a depth over ``limit``, once one is found.
    """
    if not isinstance(value, dict | list):
        return 0
    deepest = 0
    stack: list[tuple[t.Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        deepest = max(deepest, level)
        if limit is not None and deepest > limit:
            break
        stack.extend((child, level + 1) for child in children
                     if isinstance(child, dict | list))
    return deepest


def refuse_deep_json() -> None:
    """``before_request``: 400 ``ValidationError`` for a JSON body nested over ``MAX_DEPTH``.

    Malformed JSON is left to the route, which answers it as it always has.
    """
    if not request.is_json:
        return
    data = request.get_data(cache=True)
    # Nesting needs a bracket per level: most bodies are cleared by two C-speed counts,
    # and only the rest are decoded here (the route decodes them again).
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return
    try:
        found = depth(current_app.json.loads(data), limit=MAX_DEPTH)
    except JSONTooDeep:
        found = MAX_DEPTH + 1
    except ValueError:
        return
    if found > MAX_DEPTH:
        raise ValidationError(f"JSON body nested more than {MAX_DEPTH} levels deep",
                              details={"max_depth": MAX_DEPTH})
