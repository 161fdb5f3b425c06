"""Per-request plumbing: request ids, JSON bodies and their limits, OPTIONS.

Every request body is read through ``BodyRequest.stream``, so two refusals
are decided there once, whichever endpoint parses the body (``json_body``
here, the workflow loader for documents):

- a body without a Content-Length (chunked) longer than ``MAX_BODY_BYTES``
  is a 413, like one whose Content-Length says so; werkzeug would stop at
  the limit and hand on the prefix as if it were the whole body;
- a JSON body holding a lone UTF-16 surrogate escape (``"\\ud800"``) is a
  400: ``json.loads`` accepts it, and the string it builds fails wherever it
  is later encoded (a Redis key, bcrypt, a digest), as a 500.

Artifact uploads never read ``request.stream``; they have their own limit.
"""

from __future__ import annotations

import io
import re
import uuid
from typing import IO, Any, cast

from flask import Flask, Request, Response, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream, get_input_stream

from loader.document import load_json
from loader.problems import error
from packagerepo.errors import InvalidRequest, UnsupportedMediaType
from packagerepo.logs import log_context

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_JSON_DEPTH = 32

# Any escape of a UTF-16 surrogate (U+D800-U+DFFF); most bodies hold none.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Read in order, so escaped backslashes ("\\", a run at a time) are never
# taken for the start of a "\u": a surrogate pair, or (group 1) one alone.
SURROGATE_ESCAPES = re.compile(
    rb"(?:\\\\)+"
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|\\(u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


def refuse_lone_surrogates(body: bytes) -> None:
    """Refuse JSON text escaping half a surrogate pair (not Unicode text)."""
    if SURROGATE_ESCAPE.search(body) is None:
        return
    for match in SURROGATE_ESCAPES.finditer(body):
        if match.group(1) is None:
            continue
        message = (
            f"The body holds a lone UTF-16 surrogate (\\{match.group(1).decode()}),"
            " which is not valid Unicode text."
        )
        problem = error("INVALID_JSON", [], message)
        raise InvalidRequest(message, details=[problem.to_dict()])


class _RefusedPastLimit(LimitedStream):
    """A body without a Content-Length: up to ``limit`` bytes, then a 413.

    It reads at most one byte past the limit, which is how it tells a body
    of exactly ``limit`` bytes from a longer one.
    """

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        super().__init__(stream, limit + 1, is_max=True)

    def readinto(self, b: bytearray) -> int | None:  # type: ignore[override]
        size = super().readinto(b)
        if self.is_exhausted:
            raise RequestEntityTooLarge(f"The body is over {self.limit - 1} bytes.")
        return size


class BodyRequest(Request):
    """Flask's request with the body checks of the module docstring."""

    @cached_property
    def stream(self) -> IO[bytes]:
        stream = self._bounded_stream()
        if not self.is_json:
            return stream
        body = stream.read()
        refuse_lone_surrogates(body)
        return io.BytesIO(body)

    def _bounded_stream(self) -> IO[bytes]:
        limit = self.max_content_length
        if self.content_length is not None or limit is None:
            return get_input_stream(self.environ, max_content_length=limit)
        # Past this point werkzeug would truncate at the limit, silently.
        stream = get_input_stream(self.environ)
        if "wsgi.input_terminated" not in self.environ:
            return stream  # werkzeug's safe fallback: an empty stream
        return cast(IO[bytes], _RefusedPastLimit(stream, limit))


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


def _options_as_json(response: Response) -> Response:
    """Flask answers OPTIONS itself, empty and text/html; every answer is JSON."""
    automatic = getattr(request.url_rule, "provide_automatic_options", False)
    if request.method != "OPTIONS" or not automatic or response.status_code != 200:
        return response
    allowed = sorted(response.allow)
    answer = jsonify({"ok": True, "allow": allowed})
    answer.headers["Allow"] = ", ".join(allowed)
    return answer


def _finish_request(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id", "")
    return response


def _teardown(_exception: BaseException | None) -> None:
    context = g.pop("log_context", None)
    if context is not None:
        context.__exit__(None, None, None)


def install(app: Flask) -> None:
    app.request_class = BodyRequest
    app.before_request(_start_request)
    # After-request hooks run last-registered first: the id goes on the answer.
    app.after_request(_finish_request)
    app.after_request(_options_as_json)
    app.teardown_request(_teardown)
