"""`packagerepo run` (what `make run` starts): the whole stack comes up,
serves a login and a workflow, and SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def running_stack(tmp_path):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "JWT_SECRET"}
    }
    env.update(
        PORT=str(port),
        REDIS_PORT=str(free_port()),
        DATA_DIR=str(tmp_path / "data"),
        PACKAGEREPO_ENV="development",
        WORKERS="2",
        API_PROCESSES="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "packagerepo.cli", "run"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def _wait_ready(base: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read().decode(errors="replace"))
        try:
            if requests.get(f"{base}/health/ready", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError("the stack did not become ready in time")


def test_run_serves_login_and_a_bundled_workflow_then_stops_cleanly(running_stack):
    process, base = running_stack
    children = psutil.Process(process.pid).children(recursive=True)
    assert len(children) >= 4  # redis, two workers, gunicorn

    login = requests.post(
        f"{base}/auth/login", json={"username": "admin", "password": "admin"}, timeout=5
    )
    assert login.status_code == 200
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    executed = requests.post(
        f"{base}/v1/workflows/list_versions/execute?wait=20",
        json={"namespace": "acme", "name": "tool"},
        headers=headers,
        timeout=30,
    )
    # The job ran on a worker: list_versions answers like the direct endpoint.
    assert executed.status_code == 404, executed.text
    assert executed.json()["error"]["code"] == "NOT_FOUND"
    assert executed.json()["job"]["status"] == "failed"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    time.sleep(0.5)
    assert [child.pid for child in children if _alive(child)] == []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_production_without_a_jwt_secret_refuses_to_start_with_one_line(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "JWT_SECRET"}
    }
    env.update(PACKAGEREPO_ENV="production", DATA_DIR=str(tmp_path))

    _refused(env, tmp_path, "JWT_SECRET")


def test_an_admin_password_longer_than_bcrypt_takes_refuses_to_start(tmp_path):
    """Found by an adversarial pass: a 100-byte ADMIN_PASSWORD crashed the
    start with bcrypt's ValueError after Redis was already up."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(DATA_DIR=str(tmp_path), ADMIN_PASSWORD="p" * 100)

    _refused(env, tmp_path, "ADMIN_PASSWORD", "72 bytes")


def _refused(env: dict[str, str], data_dir, *said: str) -> None:
    """``packagerepo run`` stops before starting anything, with one line
    that says ``said``."""
    finished = subprocess.run(
        [sys.executable, "-m", "packagerepo.cli", "run"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 2
    assert all(words in finished.stderr for words in said), finished.stderr
    assert "Traceback" not in finished.stderr
    assert not (data_dir / "redis").exists()  # nothing was started


@pytest.mark.parametrize("variable", ["REDIS_PORT", "PORT"])
def test_a_port_in_use_refuses_to_start_with_one_line(tmp_path, variable):
    """Found by a fresh-user pass: with another Redis on REDIS_PORT the
    stack's own failed to start, yet its workers and API started against
    the other Redis before the stack stopped."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
        env.update(
            DATA_DIR=str(tmp_path),
            REDIS_PORT=str(free_port()),
            PORT=str(free_port()),
        )
        env[variable] = str(holder.getsockname()[1])

        _refused(env, tmp_path, variable, "in use")


@pytest.mark.parametrize(
    ("ports", "said"),
    [
        ({"PORT": "abc"}, "PORT='abc' is not a port"),
        ({"PORT": ""}, "PORT='' is not a port"),
        ({"REDIS_PORT": "70000"}, "REDIS_PORT='70000' is not a port"),
        ({"PORT": "same", "REDIS_PORT": "same"}, "name the same port"),
    ],
)
def test_ports_that_are_no_port_refuse_to_start_with_one_line(tmp_path, ports, said):
    """Found by an adversarial pass: these ended in a traceback, or (one
    port for both) started Redis and the workers before gunicorn failed."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(
        DATA_DIR=str(tmp_path), REDIS_PORT=str(free_port()), PORT=str(free_port())
    )
    same = str(free_port())
    env.update(
        {name: same if value == "same" else value for name, value in ports.items()}
    )

    _refused(env, tmp_path, said)
