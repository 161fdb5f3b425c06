"""Fixtures for the loader's tests: fixture documents and a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

FIXTURES = Path(__file__).with_name("fixtures")
PROJECT = Path(__file__).resolve().parents[2]
BUNDLED = PROJECT / "workflows"
FIXTURE_MAX_BYTES = 16 * 1024
"""Size limit the fixture tests parse with, so DOCUMENT_TOO_LARGE stays small."""
TENANT = "acme"


def fixture_paths(kind: str) -> list[Path]:
    return sorted((FIXTURES / kind).glob("*.json"))


def expected_code(path: Path) -> str:
    """``CYCLE__three_nodes.json`` expects ``CYCLE``."""
    return path.stem.split("__")[0]


def _redis_server_binary() -> str:
    beside_python = Path(sys.executable).with_name("redis-server")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip("No redis-server binary is installed.")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def loader_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port, for the whole session."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("loader-redis")
    server = subprocess.Popen(
        [
            _redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.025)
        else:
            pytest.fail("redis-server did not start.")
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def redis_client(loader_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(loader_redis_url)
    client.flushdb()
    yield client
    client.close()


def noop_nodes(count: int) -> list[dict]:
    """A start node and ``count - 1`` logic.noop nodes named N0, N1, …"""
    return [
        {
            "id": f"n{i}",
            "name": f"N{i}",
            "type": "trigger.start" if i == 0 else "logic.noop",
            "typeVersion": 1,
            "position": [i, 0],
            "parameters": {},
        }
        for i in range(count)
    ]
