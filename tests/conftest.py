"""Fixtures shared by the whole suite: a real redis-server on a free port, a
real Celery worker process, the API app and logged-in clients.

Integration tests never use a fake Redis or Celery's eager mode.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

# Cheap hashes: the tests check behaviour, not bcrypt's cost.
os.environ.setdefault("BCRYPT_ROUNDS", "4")
os.environ.setdefault("PACKAGEREPO_ENV", "development")

import itertools

from packagerepo import keys
from packagerepo.config import Settings
from packagerepo.stack import (
    gunicorn_command,
    redis_command,
    wait_for_redis,
    worker_command,
)

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "test-secret-" + "x" * 32


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server process owned by the tests."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = redis_command(self.port, self.directory)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_for_redis(self.url)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


def service_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the API and workers of a test stack share."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": JWT_SECRET,
        "PACKAGEREPO_ENV": "development",
        "BCRYPT_ROUNDS": "4",
        "LEASE_SECONDS": "3",
        "TENANT_SUBMIT_RATE": "1000/second",
        # The test client and gunicorn test stacks all call from 127.0.0.1.
        "ANONYMOUS_SUBMIT_RATE": "1000/second",
        "WEBHOOK_ALLOW_LOOPBACK": "true",
        "WEBHOOK_BACKOFF_SECONDS": "0.2",
        "WEBHOOK_MAX_ATTEMPTS": "3",
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def settings_for(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)


class GunicornProcess:
    """The API as ``packagerepo api`` serves it, on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                gunicorn_command(bind=f"127.0.0.1:{self.port}", workers=workers),
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                requests.get(f"{self.url}/health", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(self.log_path.read_text(errors="replace")[-4000:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()


class WorkerProcess:
    """A real Celery worker process (``packagerepo worker``)."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        queues: tuple[str, ...] = (keys.EXECUTE_QUEUE, keys.WEBHOOK_QUEUE),
    ) -> None:
        """Jobs and webhook deliveries by default, as one process."""
        self.env = env
        self.log_path = log_path
        self.queues = queues
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                worker_command(1, self.name, self.queues),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, client: redis.Redis, timeout: float = 30.0) -> None:
        """Ready once its Celery consumer has registered on the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists() and b"ready." in self.log_path.read_bytes():
                return
            if self.process and self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(self.log_path.read_text(errors="replace")[-4000:])

    def stop(self, sig: int = 15) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


@pytest.fixture(scope="session")
def stack_env(redis_server: RedisServer, data_root: Path) -> dict[str, str]:
    return service_env(redis_server.url, data_root)


@pytest.fixture(scope="session")
def worker(
    stack_env: dict[str, str], redis_server: RedisServer, data_root: Path
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(stack_env, data_root / "worker.log")
    process.start()
    process.wait_ready(redis_server.client())
    yield process
    process.stop()


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    return settings_for(stack_env)


@pytest.fixture(scope="session")
def app(settings: Settings):
    from api import create_app

    application = create_app(settings)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def make_user(app):
    """Create a user in a tenant and return a bearer header for them."""
    from api import create_app  # noqa: F401  (app fixture builds services)

    services = app.extensions["packagerepo"]

    def create(tenant: str, scopes: tuple[str, ...] = ("read", "write")) -> dict:
        username = f"u-{uuid.uuid4().hex[:10]}"
        identity = services.accounts.add_user(
            username, "pw-" + username, tenant=tenant, scopes=list(scopes)
        )
        token, _ = services.accounts.issue_token(identity)
        return {"Authorization": f"Bearer {token}"}

    return create


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test, so tests never see each other's data."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def auth(make_user, tenant: str) -> dict:
    return make_user(tenant)


def node(name: str, node_type: str, x: int, **parameters) -> dict:
    """A workflow node at position ``x`` with ``parameters``."""
    return {
        "id": name.lower().replace(" ", "-"),
        "name": name,
        "type": node_type,
        "typeVersion": 1,
        "position": [x, 0],
        "parameters": parameters,
    }


def chain(name: str, *nodes: dict, scope: str = "read") -> dict:
    """A workflow whose nodes run one after another."""
    connections = {
        source["name"]: {
            "main": [[{"node": target["name"], "type": "main", "index": 0}]]
        }
        for source, target in itertools.pairwise(nodes)
    }
    return {
        "id": name,
        "name": name,
        "nodes": list(nodes),
        "connections": connections,
        "settings": {"scope": scope},
    }


GREET = chain(
    "greet",
    node("Start", "trigger.start", 0),
    node("Greet", "data.set", 200, values={"greeting": "Hello, {{ $json.name }}!"}),
    node("Answer", "respond.json", 400, body="{{ $json }}"),
)
SLOW = chain(
    "slow",
    node("Start", "trigger.start", 0),
    node("Pause", "logic.wait", 200, milliseconds="{{ $json.ms }}"),
    node("Answer", "respond.json", 400, body={"slept": "{{ $json.ms }}"}),
)


@pytest.fixture
def workflows(app, tenant: str) -> str:
    """The test workflows registered for the test's tenant."""
    catalog = app.extensions["packagerepo"].catalog
    for document in (GREET, SLOW):
        catalog.save(tenant, document["id"], document)
    return tenant


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Free what the session's fixtures left in reference cycles (redis-py
    clients of finished stacks) with their ResourceWarnings silenced.

    Left to pytest's own collection at exit, a socket in such a cycle could
    be finalised before the connection that would have closed it; under
    ``filterwarnings = error`` that unclosed-socket warning failed a run in
    which every test passed. Warnings raised while a test runs still fail
    that test.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def pytest_configure(config: pytest.Config) -> None:
    # Tests import the project from the checkout, even without an install.
    sys.path.insert(0, str(ROOT))


class IsolatedStack:
    """A redis-server, worker processes and an API app of a test's own, for
    tests that kill workers or restart Redis."""

    def __init__(self, directory: Path, **env: str) -> None:
        self.directory = directory
        self.redis = RedisServer(directory / "redis")
        self.redis.start()
        self.env = service_env(self.redis.url, directory / "data", **env)
        self.workers: list[WorkerProcess] = []
        self._app = None

    def add_worker(self, **options: Any) -> WorkerProcess:
        index = len(self.workers)
        log = self.directory / f"worker{index}.log"
        process = WorkerProcess(self.env, log, **options)
        process.start()
        process.wait_ready(self.redis.client())
        self.workers.append(process)
        return process

    @property
    def app(self):
        if self._app is None:
            from api import create_app

            self._app = create_app(settings_for(self.env))
        return self._app

    def stop(self) -> None:
        for process in self.workers:
            process.stop(9)
        self.redis.stop()


@pytest.fixture
def isolated_stack(tmp_path: Path) -> Iterator[IsolatedStack]:
    stacks: list[IsolatedStack] = []

    def build(**env: str) -> IsolatedStack:
        stack = IsolatedStack(tmp_path / f"stack{len(stacks)}", **env)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


class Receiver:
    """A webhook receiver on loopback that answers with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.deliveries: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    created: list[Receiver] = []

    def make(status: int = 200) -> Receiver:
        created.append(Receiver(status))
        return created[-1]

    yield make
    for one in created:
        one.close()
