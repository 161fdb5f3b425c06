"""A stack of the benchmark's own on free ports: redis-server, the API under
gunicorn, project workers and floor workers, each in its own process group.

Workers can be paused (SIGSTOP) so a queue fills while nothing consumes it,
then resumed to time how fast they drain it; that rate is the worker side
alone, without the HTTP client in the way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import redis
import requests

from bench.floor_app import FLOOR_QUEUE
from packagerepo.accounts import Accounts
from packagerepo.config import Settings
from packagerepo.stack import (
    gunicorn_command,
    redis_command,
    wait_for_redis,
    worker_command,
)

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-secret-" + "x" * 32
PIDBOX_BINDINGS = "_kombu.binding.celery.pidbox"
START_TIMEOUT_SECONDS = 60.0
LOG_LEVEL = "WARNING"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the API and every worker of the bench stack share."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "BENCH_FLOOR_REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": JWT_SECRET,
        "PACKAGEREPO_ENV": "development",
        "BCRYPT_ROUNDS": "4",
        "TENANT_SUBMIT_RATE": "100000/second",
        "TENANT_MAX_RUNNING": "10000",
        "LOG_LEVEL": LOG_LEVEL,
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def project_worker_command(name: str) -> list[str]:
    """One project worker process, as ``packagerepo run`` starts it."""
    command = worker_command(1, name)
    command[command.index("--loglevel") + 1] = LOG_LEVEL
    return command


def floor_worker_command(name: str) -> list[str]:
    """The project's worker command, pointed at the floor app."""
    command = project_worker_command(name)
    command[command.index("worker.celery_app")] = "bench.floor_app"
    command[command.index("--queues") + 1] = FLOOR_QUEUE
    return command


class Part:
    """One child process (and its process group)."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self.hostname = name
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 20.0) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()
        # Pool children outlive a killed parent; take the group down too.
        self.signal(signal.SIGKILL)

    def cpu_seconds(self) -> float:
        """User and system CPU time of this process and its children so far."""
        total = 0.0
        for _name, process in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> dict[str, int]:
        """Resident set size of this process and each of its children."""
        return {name: process.memory_info().rss for name, process in self._tree()}

    def threads(self) -> dict[str, int]:
        """Threads of this process and of each of its children."""
        return {name: process.num_threads() for name, process in self._tree()}

    def _tree(self) -> list[tuple[str, psutil.Process]]:
        root = psutil.Process(self.process.pid)
        children = root.children(recursive=True)
        return [(self.name, root)] + [
            (f"{self.name}/child{index + 1}", child)
            for index, child in enumerate(children)
        ]


class BenchStack:
    """redis-server, the API and workers for one benchmark run."""

    def __init__(self, directory: Path, api_processes: int = 2) -> None:
        self.directory = directory
        self.port = free_port()
        self.api_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.port}/0"
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.env = bench_env(self.redis_url, directory / "data")
        self.api_processes = api_processes
        self.redis_part: Part | None = None
        self.api: Part | None = None
        self.workers: list[Part] = []
        self.floor_workers: list[Part] = []

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def start(self, workers: int, floor_workers: int) -> None:
        """Start everything in parallel and wait until all of it answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        command = redis_command(self.port, self.directory / "redis")
        self.redis_part = self._part("redis", command)
        wait_for_redis(self.redis_url)
        self._seed_admin()

        bind = f"127.0.0.1:{self.api_port}"
        self.api = self._part("api", gunicorn_command(bind, self.api_processes))
        self.add_workers(workers, wait=False)
        self.add_floor_workers(floor_workers, wait=False)
        self._wait_for_api()
        self._wait_for_consumers(self.workers + self.floor_workers)

    def add_workers(self, count: int, *, wait: bool = True) -> None:
        started = [self._worker("worker", project_worker_command) for _ in range(count)]
        self.workers += started
        if wait:
            self._wait_for_consumers(started)

    def add_floor_workers(self, count: int, *, wait: bool = True) -> None:
        started = [self._worker("floor", floor_worker_command) for _ in range(count)]
        self.floor_workers += started
        if wait:
            self._wait_for_consumers(started)

    def set_worker_count(self, count: int) -> None:
        """Stop the newest workers or start more until ``count`` run."""
        while len(self.workers) > count:
            self.workers.pop().stop()
        if len(self.workers) < count:
            self.add_workers(count - len(self.workers))

    def stop_floor_workers(self) -> None:
        while self.floor_workers:
            self.floor_workers.pop().stop()

    def pause(self, parts: list[Part]) -> None:
        for part in parts:
            part.signal(signal.SIGSTOP)

    def resume(self, parts: list[Part]) -> None:
        for part in parts:
            part.signal(signal.SIGCONT)

    def stop(self) -> None:
        """API first, then workers, then Redis."""
        parts = [self.api, *self.workers, *self.floor_workers, self.redis_part]
        for part in parts:
            if part is not None:
                part.stop()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of each part: the API, the project workers
        together, Redis; and this process (the benchmark's client)."""
        own = os.times()
        return {
            "api": self.api.cpu_seconds() if self.api else 0.0,
            "workers": sum(part.cpu_seconds() for part in self.workers),
            "redis": self.redis_part.cpu_seconds() if self.redis_part else 0.0,
            "client": own.user + own.system,
        }

    def api_rss(self) -> dict[str, int]:
        return self.api.rss() if self.api else {}

    def api_threads(self) -> dict[str, int]:
        return self.api.threads() if self.api else {}

    def redis_version(self) -> str:
        return self.redis.info("server")["redis_version"]

    def _seed_admin(self) -> None:
        """admin/admin in tenant default, as ``packagerepo run`` seeds it."""
        settings = Settings(
            env="development",
            redis_url=self.redis_url,
            data_dir=self.directory / "data",
            jwt_secret=JWT_SECRET,
        )
        Accounts(settings).ensure_admin()

    def _part(self, name: str, command: list[str]) -> Part:
        return Part(name, command, self.env, self.directory / f"{name}.log")

    def _worker(self, kind: str, build) -> Part:
        name = f"{kind}-{uuid.uuid4().hex[:8]}@bench"
        return Part(name, build(name), self.env, self.directory / f"{kind}.log")

    def _wait_for_api(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base_url}/health", timeout=5).ok:
                    return
            self._check_alive([self.api])
            time.sleep(0.05)
        raise RuntimeError("The API did not answer in time; see api.log.")

    def _wait_for_consumers(self, parts: list[Part]) -> None:
        """Ready once each worker's control queue is bound on the broker,
        the last step before its consumer starts taking messages."""
        client = self.redis
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        waiting = {part.hostname for part in parts}
        while waiting and time.monotonic() < deadline:
            bound = b"\n".join(client.smembers(PIDBOX_BINDINGS)).decode()
            waiting = {name for name in waiting if name not in bound}
            self._check_alive(parts)
            time.sleep(0.05)
        if waiting:
            raise RuntimeError(f"Workers {sorted(waiting)} did not start in time.")
        # The binding comes a moment before the consumer loop; let it settle.
        time.sleep(0.3)

    def _check_alive(self, parts: list[Part]) -> None:
        for part in parts:
            if part.process.poll() is not None:
                raise RuntimeError(f"{part.name} exited; see its log in the run dir.")
