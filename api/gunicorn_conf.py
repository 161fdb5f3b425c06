"""gunicorn configuration for the API (``gunicorn -c python:api.gunicorn_conf``).

gunicorn answers requests it cannot parse (oversized headers, a bad request
line, a malformed chunk) itself, before Flask sees them, with an HTML page.
Its one writer for those answers is replaced here so they use the JSON error
envelope like every other error.

NOTE: this replaces ``gunicorn.util.write_error``, whose signature has been
stable across gunicorn releases; the pinned version is checked by
``tests/test_adversarial.py``. A gunicorn hook for error bodies would let
this go.

Slow clients: gunicorn's threaded worker reads a request on a blocking
socket with no timeout once its first bytes arrived, so a client that stops
sending halfway (slowloris) holds an API thread for good, and a few dozen
hold them all. ``TConn.init`` is wrapped to give each connection's socket
``REQUEST_READ_TIMEOUT_SECONDS`` (default 10) per read and write; a stalled
client is dropped after that, at once (``TConn.close`` is wrapped too: its
graceful close would linger for a client that never closes).

NOTE: a client trickling a byte just inside that window still holds its
thread, and the threads are few (``API_THREADS``); in production a
buffering proxy (nginx) in front of gunicorn bounds that, as would an
event-loop worker class.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from typing import Any

from gunicorn import util
from gunicorn.http import unreader
from gunicorn.workers import gthread

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

_log = logging.getLogger("gunicorn.error")

REQUEST_READ_TIMEOUT_SECONDS = float(
    os.environ.get("REQUEST_READ_TIMEOUT_SECONDS", "10")
)
_connection_init = gthread.TConn.init
_connection_close = gthread.TConn.close
_unreader_chunk = unreader.SocketUnreader.chunk


def _init_with_read_timeout(connection: Any) -> None:
    _connection_init(connection)
    # init() runs again for every request on a kept-alive connection, right
    # after the worker made its socket blocking (no timeout) once more.
    connection.sock.settimeout(REQUEST_READ_TIMEOUT_SECONDS)


def _chunk_noting_timeouts(source: Any, size_hint: int | None = None) -> bytes:
    try:
        # The pinned stubs predate chunk()'s size_hint; gunicorn 27 has it.
        data: bytes = _unreader_chunk(source, size_hint)  # type: ignore[call-arg]
    except TimeoutError:
        source.timed_out = True
        _log.info(
            "A client sent nothing for %g s in the middle of its request; "
            "its connection is dropped.",
            REQUEST_READ_TIMEOUT_SECONDS,
        )
        # As a reset, gunicorn drops it quietly (a timeout it would log as
        # an error with a traceback) and werkzeug reads it as a disconnect.
        raise ConnectionResetError(errno.ECONNRESET, "Client stalled.")
    return data


def _close_stalled_at_once(connection: Any, graceful: bool = False) -> None:
    # A graceful close lingers up to 2 s, in the worker's main loop, for the
    # client to close too; a client that stalled never does, and a few dozen
    # of them starved the loop until the arbiter killed the worker.
    parser = connection.parser
    stalled = parser is not None and getattr(parser.unreader, "timed_out", False)
    _connection_close(connection, graceful=graceful and not stalled)


gthread.TConn.init = _init_with_read_timeout  # type: ignore[method-assign,assignment]
gthread.TConn.close = _close_stalled_at_once  # type: ignore[method-assign,assignment]
unreader.SocketUnreader.chunk = _chunk_noting_timeouts  # type: ignore[method-assign,assignment]


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
