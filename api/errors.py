"""The one place where exceptions become HTTP responses.

Every error, Flask's own 404/405/413/415 included, leaves as the envelope
``{"ok": false, "error": {"code", "message", "details"?}}``; never an HTML
page, never a traceback.
"""

from __future__ import annotations

import logging

import kombu.exceptions
import redis
from flask import Flask, Response, has_request_context, jsonify, request
from gunicorn.http import errors as http_errors
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from packagerepo.errors import (
    InvalidRequest,
    PackageRepoError,
    QueueUnavailable,
    RateLimited,
)

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    411: "LENGTH_REQUIRED",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    416: "RANGE_NOT_SATISFIABLE",
    429: "RATE_LIMITED",
    431: "HEADERS_TOO_LARGE",
    501: "NOT_IMPLEMENTED",
}


def error_response(error: PackageRepoError) -> Response:
    response = jsonify({"ok": False, "error": error.to_dict()})
    response.status_code = error.status
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _is_werkzeugs_own_413(exception: HTTPException) -> bool:
    return (
        isinstance(exception, RequestEntityTooLarge)
        and exception.description == RequestEntityTooLarge.description
    )


def _from_http(exception: HTTPException) -> Response:
    status = exception.code or 500
    code = HTTP_CODES.get(status, "HTTP_ERROR")
    message = exception.description or exception.name
    if _is_werkzeugs_own_413(exception) and has_request_context():
        # The same words as a chunked body past the limit gets.
        limit = request.max_content_length
        message = f"The body is over {limit} bytes." if limit else message
    response = error_response(PackageRepoError(message, code=code, status=status))
    # The headers werkzeug gives its own error page belong to this answer too:
    # Allow on a 405, Content-Range (the size) on a 416, Retry-After.
    for name, value in exception.get_headers():
        if name.lower() != "content-type":
            response.headers.add(name, value)
    return response


def _from_redis(exception: Exception) -> Response:
    log.error("Redis is unreachable: %s", exception)
    return error_response(
        QueueUnavailable("The job queue is unavailable; try again shortly.")
    )


def _from_framing(exception: Exception) -> Response:
    """A body whose chunked framing breaks mid-read (gunicorn finds it only
    as the view reads): the client's fault, and nothing was written."""
    log.info("A request body was refused: %s.", type(exception).__name__)
    return error_response(
        InvalidRequest(f"The request body is not well framed: {exception}."[:300])
    )


def _from_unexpected(exception: Exception) -> Response:
    log.exception("An unexpected error escaped a request handler.")
    return error_response(PackageRepoError("An internal error occurred."))


def install(app: Flask) -> None:
    """Register the handlers on ``app``."""
    app.register_error_handler(PackageRepoError, error_response)
    app.register_error_handler(HTTPException, _from_http)
    app.register_error_handler(redis.ConnectionError, _from_redis)
    app.register_error_handler(redis.TimeoutError, _from_redis)
    # A Redis that answers but cannot take writes now (out of memory, a
    # read-only replica, loading its data) is unavailable too, not a bug.
    for refusal in (
        redis.exceptions.OutOfMemoryError,
        redis.exceptions.ReadOnlyError,
        redis.exceptions.BusyLoadingError,
    ):
        app.register_error_handler(refusal, _from_redis)
    app.register_error_handler(kombu.exceptions.OperationalError, _from_redis)
    app.register_error_handler(http_errors.ParseException, _from_framing)
    app.register_error_handler(http_errors.NoMoreData, _from_framing)
    app.register_error_handler(Exception, _from_unexpected)
