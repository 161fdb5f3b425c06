"""Graceful shutdown: a SIGTERMed worker finishes its running job, a worker
killed with its pool hands the job back, gunicorn drains an in-flight
request, and ``packagerepo run`` stops with a job in flight losing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest
import requests

from tests.conftest import ROOT, SLOW, RedisServer, free_port
from tests.ops.conftest import GunicornProcess

pytestmark = pytest.mark.integration

SLOW_INPUT = {"ms": 1500}


def prepared(stack) -> tuple[object, dict[str, str]]:
    """The stack's app client and a bearer header of a tenant owning SLOW."""
    services = stack.app.extensions["packagerepo"]
    tenant = f"t{uuid.uuid4().hex[:12]}"
    services.catalog.save(tenant, SLOW["id"], SLOW)
    identity = services.accounts.add_user(
        f"u-{uuid.uuid4().hex[:8]}",
        "pw-shutdown",
        tenant=tenant,
        scopes=["read", "write"],
    )
    token, _ = services.accounts.issue_token(identity)
    return stack.app.test_client(), {"Authorization": f"Bearer {token}"}


def wait_for(client, auth, job_id: str, wanted: set[str], timeout: float = 30) -> dict:
    """Poll the job until its status is in ``wanted``; records every status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["job"]
        if job["status"] in wanted:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {job['status']}")


def test_a_sigtermed_worker_finishes_its_running_job_first(isolated_stack):
    stack = isolated_stack()
    worker = stack.add_worker()
    client, auth = prepared(stack)
    job_id = client.post("/v1/workflows/slow/execute", json=SLOW_INPUT, headers=auth)
    job_id = job_id.get_json()["job"]["id"]
    wait_for(client, auth, job_id, {"running"})

    os.kill(worker.process.pid, signal.SIGTERM)  # the main process, as docker does
    exit_code = worker.process.wait(timeout=30)

    job = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["job"]
    assert exit_code == 0
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    assert job["result"] == {"slept": 1500}


def test_a_worker_killed_with_its_pool_hands_its_job_back(isolated_stack):
    stack = isolated_stack()
    first = stack.add_worker()
    client, auth = prepared(stack)
    job_id = client.post("/v1/workflows/slow/execute", json=SLOW_INPUT, headers=auth)
    job_id = job_id.get_json()["job"]["id"]
    wait_for(client, auth, job_id, {"running"})
    stack.add_worker()

    # SIGTERM to the whole group: the pool process dies mid-job.
    os.killpg(first.process.pid, signal.SIGTERM)
    first.process.wait(timeout=30)
    job = wait_for(client, auth, job_id, {"succeeded", "failed", "cancelled"})

    # Either the pool process died and another worker re-ran the job, or it
    # outlived the signal and finished it: never lost, never left running.
    assert job["status"] == "succeeded"
    assert job["attempts"] in {1, 2}


def test_gunicorn_drains_an_in_flight_request_on_sigterm(isolated_stack, tmp_path):
    stack = isolated_stack()
    stack.add_worker()
    client, auth = prepared(stack)
    api = GunicornProcess(stack.env, tmp_path / "api.log", workers=1)
    api.wait_ready()
    answers: list[requests.Response] = []

    def execute_and_wait() -> None:
        answers.append(
            requests.post(
                f"{api.url}/v1/workflows/slow/execute?wait=20",
                json=SLOW_INPUT,
                headers=auth,
                timeout=30,
            )
        )

    caller = threading.Thread(target=execute_and_wait)
    caller.start()
    try:
        _wait_for_running_job(client, auth)
        api.process.send_signal(signal.SIGTERM)
        caller.join(timeout=30)
        exit_code = api.process.wait(timeout=40)
    finally:
        api.stop()

    assert exit_code == 0
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["result"] == {"slept": 1500}


def _wait_for_running_job(client, auth, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = client.get("/v1/jobs?status=running", headers=auth).get_json()
        if listing["jobs"]:
            return
        time.sleep(0.05)
    raise AssertionError("no job started running")


def test_packagerepo_run_stops_with_a_job_in_flight_and_loses_nothing(tmp_path):
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "JWT_SECRET"},
        "REDIS_URL": redis_server.url,
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / "data"),
        "PACKAGEREPO_ENV": "development",
        "WORKERS": "1",
        "API_PROCESSES": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "packagerepo.cli", "run"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        headers = _admin_headers(base, process)
        _register_slow(tmp_path / "data")
        submitted = requests.post(
            f"{base}/v1/workflows/slow/execute",
            json=SLOW_INPUT,
            headers=headers,
            timeout=10,
        )
        job_id = submitted.json()["job"]["id"]
        _wait_running(base, headers, job_id)
        children = psutil.Process(process.pid).children(recursive=True)

        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=90)

        job = _job_in_redis(redis_server, job_id)
        assert exit_code == 0
        assert job["status"] == "succeeded"
        assert [child.pid for child in children if child.is_running()] == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        redis_server.stop()


def _admin_headers(base: str, process: subprocess.Popen) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "packagerepo run exited early"
        try:
            if requests.get(f"{base}/health/ready", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    login = requests.post(
        f"{base}/auth/login",
        json={"username": "admin", "password": "admin"},
        timeout=10,
    )
    return {"Authorization": f"Bearer {login.json()['token']}"}


def _register_slow(data_dir) -> None:
    from loader import Catalog
    from packagerepo.services import BUNDLED_WORKFLOWS

    Catalog(BUNDLED_WORKFLOWS, data_dir.resolve()).save("default", SLOW["id"], SLOW)


def _wait_running(base: str, headers: dict[str, str], job_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = requests.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=5)
        if job.json()["job"]["status"] == "running":
            return
        time.sleep(0.05)
    raise AssertionError("the job never started")


def _job_in_redis(server: RedisServer, job_id: str) -> dict:
    from packagerepo.jobs import JobStore

    jobs = JobStore(server.client())
    return jobs.get(jobs.tenant_of(job_id), job_id)
