"""Per-request plumbing: request ids, JSON bodies and their limits."""

from __future__ import annotations

import re
import uuid
from typing import Any

from flask import Flask, Response, g, request

from loader.document import load_json
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
    # The same strict reading as workflow documents: no duplicate keys, no
    # NaN or Infinity, depth checked before the recursive parser runs.
    return load_json(
        raw,
        max_bytes=len(raw),
        max_depth=MAX_JSON_DEPTH,
        failure=InvalidRequest,
    )


def json_object(*, default: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json_body(default=default)
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


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
