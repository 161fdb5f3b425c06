"""Findings of a second adversarial pass, over the job lifecycle, the engine,
webhooks, health and the CLI client. Each test fails today and passes once
the finding is fixed; each is a minimal reproduction."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, GunicornProcess, chain, node

# ---------------------------------------------------------------- helpers


def hostile_receiver(mode: str) -> tuple[int, dict, socket.socket]:
    """A raw HTTP receiver on loopback: `trickle` answers one body byte a
    second, `huge` answers a body of 300 MB as fast as it is read."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stats = {"sent": 0}

    def handle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(5)
            conn.recv(1 << 20)
            if mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                for _ in range(100_000):
                    time.sleep(1)
                    conn.sendall(b"x")
                    stats["sent"] += 1
            else:
                size = 300 * 1024 * 1024
                conn.sendall(
                    f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
                )
                chunk = b"x" * (1 << 20)
                while stats["sent"] < size:
                    conn.sendall(chunk)
                    stats["sent"] += len(chunk)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1], stats, server


def loopback_settings(tmp_path: Path, **changes):
    from packagerepo.config import Settings

    settings = Settings(data_dir=tmp_path, jwt_secret="x" * 32)
    return replace(settings, **changes)


def stack_user(stack, tenant: str, *documents: dict) -> dict:
    services = stack.app.extensions["packagerepo"]
    for document in documents:
        services.catalog.save(tenant, document["id"], document)
    identity = services.accounts.add_user(
        f"user-{tenant}", "pw", tenant=tenant, scopes=["read", "write"]
    )
    return {"Authorization": f"Bearer {services.accounts.issue_token(identity)[0]}"}


SLOW = chain(
    "slow",
    node("Start", "trigger.start", 0),
    node("Pause", "logic.wait", 200, milliseconds="{{ $json.ms }}"),
    node("Answer", "respond.json", 400, body={"slept": "{{ $json.ms }}"}),
)


# --------------------------------------------------------------- webhooks


def test_a_webhook_receiver_that_trickles_its_answer_cannot_hold_a_worker(tmp_path):
    """HIGH. requests' timeout=5 bounds each read, not the delivery: a
    receiver sending one body byte a second keeps deliver() (and the worker
    process, which shares its pool with jobs) busy indefinitely."""
    from packagerepo import webhooks

    port, _stats, server = hostile_receiver("trickle")
    settings = loopback_settings(tmp_path, webhook_allow_loopback=True)
    done = threading.Event()

    def deliver() -> None:
        with contextlib.suppress(Exception):
            webhooks.deliver(f"http://127.0.0.1:{port}/h", {"tenant": "t"}, settings)
        done.set()

    threading.Thread(target=deliver, daemon=True).start()
    try:
        assert done.wait(20), "a trickling receiver held the delivery for 20 s"
    finally:
        server.close()


def test_a_webhook_receivers_huge_answer_is_not_read_into_memory(tmp_path):
    """HIGH. deliver() reads the whole response body (no stream=True): a
    receiver answering Content-Length 4 GB made the process read all of it
    (max RSS 7.7 GB), enough to get a worker OOM-killed."""
    from packagerepo import webhooks

    port, stats, server = hostile_receiver("huge")
    settings = loopback_settings(tmp_path, webhook_allow_loopback=True)
    try:
        webhooks.deliver(f"http://127.0.0.1:{port}/h", {"tenant": "t"}, settings)
    finally:
        server.close()
    assert stats["sent"] < 16 * 1024 * 1024, f"{stats['sent']} bytes were read"


def test_a_callback_host_that_resolves_privately_at_delivery_time_gets_nothing(
    tmp_path, receiver, monkeypatch
):
    """MEDIUM. check_destination resolves the host, then requests resolves it
    again to connect (DNS rebinding): a name answering a public address to
    the check and 127.0.0.1 to the connection gets the signed job on
    loopback although WEBHOOK_ALLOW_LOOPBACK is false."""
    from packagerepo import webhooks

    hook = receiver(200)
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34"])

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.example":
            address = next(answers, "127.0.0.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    settings = loopback_settings(tmp_path, webhook_allow_loopback=False)
    url = hook.url.replace("127.0.0.1", "rebind.example")
    with contextlib.suppress(Exception):
        webhooks.deliver(url, {"tenant": "t", "id": "x"}, settings)
    assert hook.deliveries == [], "the webhook was delivered to a loopback address"


# -------------------------------------------------------------------- SSE


def _queued_job_behind_gunicorn(isolated_stack, tenant: str):
    """A job that stays queued (no worker) and a gunicorn API to stream it."""
    stack = isolated_stack()
    auth = stack_user(stack, tenant, SLOW)
    submitted = stack.app.test_client().post(
        "/v1/workflows/slow/execute", json={"ms": 1000}, headers=auth
    )
    job_id = submitted.get_json()["job"]["id"]
    api = GunicornProcess(stack.env, stack.directory / "gunicorn.log", workers=1)
    return auth, job_id, api


def _open_stream(port: int, job_id: str, auth: dict) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {auth['Authorization']}\r\n\r\n".encode()
    )
    return conn


def _refused(conn: socket.socket) -> bool:
    """A refused stream answers 503 at once; an open one of a queued job
    sends nothing until its first heartbeat."""
    conn.settimeout(2)
    try:
        return conn.recv(4096).startswith(b"HTTP/1.1 503")
    except TimeoutError:
        return False
    finally:
        conn.close()


def test_event_streams_of_one_client_cannot_take_every_api_thread(
    isolated_stack, monkeypatch
):
    """HIGH. Each open SSE stream of an unfinished job holds a gunicorn
    thread (15 s heartbeat); 70 streams against the default 2x32 threads
    made GET /health time out for everyone (README: "gthread, so SSE streams
    never block other requests"). Reproduced here with 4 threads."""
    monkeypatch.setenv("API_THREADS", "4")
    auth, job_id, api = _queued_job_behind_gunicorn(isolated_stack, "sse")
    streams = []
    try:
        api.wait_ready()
        streams = [_open_stream(api.port, job_id, auth) for _ in range(5)]
        time.sleep(1)
        try:
            answer = requests.get(f"{api.url}/health", timeout=5)
        except requests.Timeout:
            pytest.fail("GET /health got no answer while 5 event streams were open")
        assert answer.status_code == 200
    finally:
        for conn in streams:
            conn.close()
        api.stop()


def test_a_stream_whose_client_left_gives_its_slot_back_before_the_heartbeat(
    isolated_stack, monkeypatch
):
    """A client that closes its stream of an unfinished job held its slot
    until the next heartbeat failed to write (15 s): opening and dropping
    SSE_MAX_STREAMS streams shut everyone out of event streams that long."""
    monkeypatch.setenv("API_THREADS", "4")  # SSE_MAX_STREAMS = 2
    auth, job_id, api = _queued_job_behind_gunicorn(isolated_stack, "sse-left")
    try:
        api.wait_ready()
        left = [_open_stream(api.port, job_id, auth) for _ in range(2)]
        time.sleep(0.5)
        assert _refused(_open_stream(api.port, job_id, auth))  # both slots taken
        for conn in left:
            conn.close()

        # Well inside the 15 s heartbeat: the slots must be free again.
        deadline = time.monotonic() + 8
        while _refused(_open_stream(api.port, job_id, auth)):
            assert time.monotonic() < deadline, "the slots were not given back"
            time.sleep(0.25)
    finally:
        api.stop()


def test_a_stream_under_gunicorn_follows_its_job_to_done(isolated_stack):
    """The look for a gone client must not block: gunicorn's sockets carry
    a read timeout, and a peek that waited on it held every stream 10 s and
    then ended it without its done event (the benchmark caught it)."""
    stack = isolated_stack()
    stack.add_worker()
    auth = stack_user(stack, "sse-follow", SLOW)
    api = GunicornProcess(stack.env, stack.directory / "gunicorn.log", workers=1)
    try:
        api.wait_ready()
        submitted = requests.post(
            f"{api.url}/v1/workflows/slow/execute",
            json={"ms": 1500},
            headers=auth,
            timeout=10,
        )
        job_id = submitted.json()["job"]["id"]
        with requests.get(
            f"{api.url}/v1/jobs/{job_id}/events", headers=auth, stream=True, timeout=20
        ) as stream:
            events = [
                line.removeprefix("event: ")
                for line in stream.iter_lines(decode_unicode=True)
                if line.startswith("event: ")
            ]
    finally:
        api.stop()

    assert events[-1] == "done"
    assert "node" in events


def test_a_non_ascii_digit_as_last_event_id_is_not_a_500(
    client, auth, workflows, worker
):
    """LOW. Last-Event-ID: b'\\xb2' arrives as '²': str.isdigit() accepts
    it, int() refuses it, and the stream answers 500 INTERNAL_ERROR."""
    done = client.post("/v1/workflows/greet/execute?wait=20", json={}, headers=auth)
    job_id = done.get_json()["job"]["id"]
    response = client.get(
        f"/v1/jobs/{job_id}/events", headers={**auth, "Last-Event-ID": "²"}
    )
    assert response.status_code in {200, 400}, response.get_data(as_text=True)


# -------------------------------------------------------------- lifecycle


def test_a_worker_resuming_after_its_job_was_requeued_never_writes_to_the_ended_job(
    isolated_stack,
):
    """MEDIUM. Worker A is SIGSTOPped mid-job; its lease lapses, worker B
    re-runs the job. On SIGCONT, A's finish is accepted (FINISH checks the
    status, not the owner), so the job ends with A's outcome while B still
    runs; B's node records then land after `done`: events after the done
    event and a `nodes` list rewritten after finished_at."""
    stack = isolated_stack(LEASE_SECONDS="2")
    auth = stack_user(stack, "zombie", SLOW)
    services = stack.app.extensions["packagerepo"]
    first = stack.add_worker()
    client = stack.app.test_client()
    submitted = client.post(
        "/v1/workflows/slow/execute", json={"ms": 6000}, headers=auth
    )
    job_id = submitted.get_json()["job"]["id"]
    time.sleep(1.5)
    os.killpg(first.process.pid, signal.SIGSTOP)
    try:
        stack.add_worker()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = services.jobs.get("zombie", job_id)
            if job["attempts"] >= 2 and job["status"] == "running":
                break
            time.sleep(0.2)
    finally:
        os.killpg(first.process.pid, signal.SIGCONT)
    time.sleep(10)  # both runs are over by now

    events = [
        event["event"] for _, event in services.jobs.events_since("zombie", job_id)
    ]
    assert "done" in events
    assert events.index("done") == len(events) - 1, events


def test_retrying_an_execute_that_answered_503_with_its_idempotency_key_runs_the_job(
    client, auth, workflows, worker, monkeypatch
):
    """MEDIUM. A 503 QUEUE_UNAVAILABLE says "try again", but the key stays
    bound to the job that failed: the retry with the same Idempotency-Key
    gets that failed job back for 24 h and nothing runs."""
    import redis

    jobs = client.application.extensions["packagerepo"].jobs
    real = jobs.create
    calls = []

    def broker_down_once(**job):
        calls.append(job["job_id"])
        if len(calls) == 1:
            raise redis.ConnectionError("broker down")
        return real(**job)

    monkeypatch.setattr(jobs, "create", broker_down_once)
    headers = {**auth, "Idempotency-Key": "retry-after-503"}
    first = client.post(
        "/v1/workflows/greet/execute", json={"name": "x"}, headers=headers
    )
    assert first.status_code == 503
    retry = client.post(
        "/v1/workflows/greet/execute?wait=20", json={"name": "x"}, headers=headers
    )
    assert retry.get_json()["job"]["status"] != "failed", retry.get_json()["job"][
        "error"
    ]
    assert first.get_json()["error"]["code"] == "QUEUE_UNAVAILABLE"
    assert jobs.tenant_of(calls[0]) is None  # nothing of the first was written


# ------------------------------------------------------------------ health


def test_readiness_is_lost_when_the_only_workers_consumer_is_stopped(isolated_stack):
    """MEDIUM. The worker report behind /health/ready is kept alive by the
    pool process's reaper thread. With the Celery main process (the
    consumer) SIGSTOPped, no job is ever taken, yet /health/ready stayed
    200 for 80 s and counting. (Stopping the whole group: 60 s of 200.)"""
    stack = isolated_stack()
    worker = stack.add_worker()
    client = stack.app.test_client()
    time.sleep(1)
    assert client.get("/health/ready").status_code == 200
    os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 25
        status = 200
        while time.monotonic() < deadline and status == 200:
            time.sleep(1)
            status = client.get("/health/ready").status_code
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    assert status == 503, "ready for 25 s with no consumer taking jobs"


# ------------------------------------------------------------------ engine


def test_node_errors_cannot_grow_a_job_record_past_the_result_limit(
    app, client, auth, tenant, worker
):
    """HIGH. Only the result is held to max_result_bytes (10 MB). An
    expression error echoes its input (float("x" * 8e6) -> an 8 MB message),
    every continueRegularOutput node records one, and the whole node list is
    re-sent per node: 10 such nodes made an 80 MB job record, an 77 MB event
    log, an 80 MB ?wait answer and +220 MB of Redis memory in 7 s; the
    2000-node limit makes that unbounded."""
    failing = []
    for index in range(2):
        one = node(f"Fail{index}", "data.set", 100 + index,
                   values={"v": '{{ float("x" * 8000000) }}'})  # fmt: skip
        one["onError"] = "continueRegularOutput"
        failing.append(one)
    document = chain(
        "bigerr",
        node("Start", "trigger.start", 0),
        *failing,
        node("Answer", "respond.json", 400, body={"ok": True}),
    )
    app.extensions["packagerepo"].catalog.save(tenant, "bigerr", document)
    response = client.post(
        "/v1/workflows/bigerr/execute?wait=30", json={}, headers=auth
    )
    job_id = response.get_json()["job"]["id"]
    record = client.get(f"/v1/jobs/{job_id}", headers=auth).get_data()
    assert len(record) < 11 * 1024 * 1024, f"the job record is {len(record)} bytes"


def test_the_status_of_respond_json_is_the_status_of_a_waiting_execute(
    app, client, auth, tenant, worker
):
    """LOW. respond.json takes a status (200-399, docs/engine.md) and the
    engine returns it as http_status "for an API that waits", but the runner
    drops it: ?wait always answers 200 and the job does not record it."""
    document = chain(
        "created",
        node("Start", "trigger.start", 0),
        node("Answer", "respond.json", 200, body={"made": True}, status=201),
    )
    app.extensions["packagerepo"].catalog.save(tenant, "created", document)
    response = client.post(
        "/v1/workflows/created/execute?wait=20", json={}, headers=auth
    )
    assert response.status_code == 201, response.get_json()


def test_a_respond_error_status_that_is_a_non_ascii_digit_is_a_parameter_error(
    app, client, auth, tenant, worker
):
    """LOW. A status expression yielding "²" passes str.isdigit() and int()
    raises: the node fails as NODE_ERROR "failed unexpectedly (ValueError)"
    with a traceback in the worker log instead of INVALID_PARAMETER."""
    document = chain(
        "oddstatus",
        node("Start", "trigger.start", 0),
        node("Fail", "respond.error", 200, code="X", message="m", status='{{ "²" }}'),
    )
    app.extensions["packagerepo"].catalog.save(tenant, "oddstatus", document)
    response = client.post(
        "/v1/workflows/oddstatus/execute?wait=20", json={}, headers=auth
    )
    assert response.get_json()["error"]["code"] == "INVALID_PARAMETER"


def test_retry_settings_the_engine_would_cap_are_reported_by_validation(client, auth):
    """LOW. Validation accepts maxTries 1-10 and waitBetweenTries 0-60000 ms
    without a word, while the engine silently caps them at 5 and 5000 ms
    (docs/engine.md): a node asking for 10 tries gets 5."""
    failing = node("Fail", "data.set", 100, values={"v": "{{ 1/0 }}"})
    failing.update(retryOnFail=True, maxTries=10, waitBetweenTries=60000)
    document = chain("retries", node("Start", "trigger.start", 0), failing)
    response = client.post("/v1/workflows/validate", json=document, headers=auth)
    body = response.get_json()
    problems = json.dumps(body)
    assert "maxTries" in problems or "INVALID_RETRY" in problems, body


# --------------------------------------------------------------------- CLI


@contextlib.contextmanager
def other_json_service(answer: bytes) -> Iterator[str]:
    """A service at the wrong URL answering 200 with some other JSON."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _answer

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("answer", [b'{"ok": true}', b'{"ok": true, "job": null}'])
@pytest.mark.parametrize("command", [["submit", "greet"], ["jobs"], ["login", "admin"]])
def test_the_cli_reports_an_unexpected_answer_as_an_error_not_a_traceback(
    tmp_path, answer, command
):
    """LOW. A wrong --url that answers JSON of another shape makes submit,
    jobs and login crash with KeyError/TypeError tracebacks."""
    with other_json_service(answer) as url:
        finished = subprocess.run(
            [sys.executable, "-m", "packagerepo.cli", *command, "--url", url,
             "--token", "t"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "PACKAGEREPO_PASSWORD": "x",
                 "PACKAGEREPO_CONFIG": str(tmp_path)},
        )  # fmt: skip
    assert finished.returncode == 1
    assert "Traceback" not in finished.stderr, finished.stderr[-600:]


def test_the_cli_reports_an_unreadable_input_file_as_an_error_not_a_traceback(
    tmp_path,
):
    """LOW. `submit --input` of a file that is not JSON (or is missing) ends
    in a JSONDecodeError/FileNotFoundError traceback."""
    bad = tmp_path / "input.json"
    bad.write_text("{not json")
    finished = subprocess.run(
        [sys.executable, "-m", "packagerepo.cli", "submit", "greet", "--input",
         str(bad), "--url", "http://127.0.0.1:9", "--token", "t"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert finished.returncode == 1
    assert "Traceback" not in finished.stderr, finished.stderr[-600:]
