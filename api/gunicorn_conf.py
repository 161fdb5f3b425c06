"""gunicorn configuration for the API (``gunicorn -c python:api.gunicorn_conf``).

gunicorn answers requests it cannot parse (oversized headers, a bad request
line, a malformed chunk) itself, before Flask sees them, with an HTML page.
Its one writer for those answers is replaced here so they use the JSON error
envelope like every other error.

NOTE: this replaces ``gunicorn.util.write_error``, whose signature has been
stable across gunicorn releases; the pinned version is checked by
``tests/test_adversarial.py``. A gunicorn hook for error bodies would let
this go.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from gunicorn import util

from api.errors import HTTP_CODES


def write_json_error(
    sock: socket.socket, status_int: int, reason: str, mesg: str
) -> None:
    code = HTTP_CODES.get(status_int, "INVALID_REQUEST")
    body = json.dumps(
        {"ok": False, "error": {"code": code, "message": f"{reason}: {mesg}"[:500]}}
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = write_json_error


def _json_logging() -> dict[str, Any]:
    """gunicorn's own loggers in the service's JSON format."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["context"],
        "stream": "ext://sys.stderr",
    }
    logger = {"handlers": ["stderr"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "packagerepo.logs.ContextFilter"}},
        "formatters": {"json": {"()": "packagerepo.logs.JsonFormatter"}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {"gunicorn.error": logger, "gunicorn.access": logger},
    }


# With LOG_FORMAT=json every line the API writes is one JSON object,
# gunicorn's own (start, stop, worker restarts) included.
if os.environ.get("LOG_FORMAT") == "json":
    logconfig_dict = _json_logging()
