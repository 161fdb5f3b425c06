"""Per-request plumbing: request ids, JSON bodies and their limits."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from flask import Flask, Response, g, request

from packagerepo.errors import InvalidRequest, UnsupportedMediaType
from packagerepo.logs import log_context

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_JSON_DEPTH = 32


def json_body(*, default: Any = None) -> Any:
    """The request's JSON body, checked for type, size, syntax and depth.

    An empty body gives ``default`` when one is allowed.
    """
    raw = request.get_data(cache=True)
    if not raw and default is not None:
        return default
    if not request.is_json:
        raise UnsupportedMediaType("The body must be application/json.")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest("The body is not valid JSON.")
    if json_depth(body) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"The body is nested deeper than {MAX_JSON_DEPTH}.")
    return body


def json_object(*, default: dict | None = None) -> dict[str, Any]:
    body = json_body(default=default)
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            current = list(current.values())
        if isinstance(current, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in current)
    return deepest


def _start_request() -> None:
    offered = request.headers.get("X-Request-ID", "")
    g.request_id = offered if REQUEST_ID_PATTERN.match(offered) else uuid.uuid4().hex
    g.log_context = log_context(request_id=g.request_id)
    g.log_context.__enter__()


def _finish_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    return response


def _teardown(_exception: BaseException | None) -> None:
    context = g.pop("log_context", None)
    if context is not None:
        context.__exit__(None, None, None)


def install(app: Flask) -> None:
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_teardown)
