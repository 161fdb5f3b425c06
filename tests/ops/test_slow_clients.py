"""Slow clients against gunicorn: a connection that stops sending in the
middle of its request is dropped after REQUEST_READ_TIMEOUT_SECONDS, so a
few dozen of them cannot hold every API thread (slowloris)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import GunicornProcess, service_env

pytestmark = pytest.mark.integration

THREADS = 4


@pytest.fixture
def small_api(redis_server, tmp_path, monkeypatch) -> Iterator[GunicornProcess]:
    monkeypatch.setenv("API_THREADS", str(THREADS))
    env = service_env(
        redis_server.url, tmp_path / "data", REQUEST_READ_TIMEOUT_SECONDS="1"
    )
    api = GunicornProcess(env, tmp_path / "api.log", workers=1)
    api.wait_ready()
    yield api
    api.stop()


def _stalled(url: str, partial: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.sendall(partial)
    return connection


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\n",
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nContent-Length: 100\r\n\r\n{",
    ],
    ids=["headers never finish", "body never arrives"],
)
def test_stalled_requests_do_not_hold_every_api_thread(small_api, partial):
    stalled = [_stalled(small_api.url, partial) for _ in range(3 * THREADS)]
    time.sleep(0.2)

    started = time.monotonic()
    answer = requests.get(f"{small_api.url}/health", timeout=10)

    assert answer.status_code == 200
    assert time.monotonic() - started < 8
    # Every stalled connection ends: dropped, or (a body that stopped)
    # answered in the envelope and closed by the client's silence after.
    deadline = time.monotonic() + 30
    for connection in stalled:
        received = _until_closed(connection, deadline)
        assert received == b"" or b'"ok":false' in received
        connection.close()


def _until_closed(connection: socket.socket, deadline: float) -> bytes:
    received = b""
    while True:
        connection.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = connection.recv(4096)
        if not chunk or b'"ok":false' in received + chunk:
            return received + chunk
        received += chunk


def test_stalled_connections_are_closed_without_lingering_on_each(small_api):
    # gunicorn closes a connection from its main loop, "gracefully": up to
    # 2 s waiting for the client to close too. A client that stalled never
    # does, so a few dozen of them kept the main loop from answering the
    # arbiter's heartbeat, and the arbiter killed the worker.
    partial = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    started = time.monotonic()
    stalled = [_stalled(small_api.url, partial) for _ in range(3 * THREADS)]

    # The clients stay silent and open; each sees the server's FIN.
    pending = set(stalled)
    deadline = started + 40
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select(list(pending), [], [], 1.0)
        pending -= set(readable)
    finished = time.monotonic() - started
    for connection in stalled:
        connection.close()

    assert not pending
    # One read timeout per thread's share of them, not 2 s of linger each.
    assert finished < 12
    log = small_api.log_path.read_text(errors="replace")
    assert "WORKER TIMEOUT" not in log


def test_a_dropped_slow_client_is_one_log_line_not_an_error_traceback(small_api):
    connection = _stalled(small_api.url, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert _until_closed(connection, time.monotonic() + 20) == b""
    connection.close()
    time.sleep(0.2)

    log = small_api.log_path.read_text(errors="replace")
    assert "its connection is dropped" in log
    assert "Traceback" not in log
    assert "Socket error processing request" not in log
