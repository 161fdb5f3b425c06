"""A live service for the operations tests: a redis-server, a Celery worker
and the API under gunicorn (two processes), all sharing one
``PROMETHEUS_MULTIPROC_DIR`` and logging JSON to files the tests read."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from packagerepo.metrics import fresh_multiproc_dir
from packagerepo.services import BUNDLED_WORKFLOWS
from tests.conftest import (
    GREET,
    SLOW,
    GunicornProcess,
    RedisServer,
    WorkerProcess,
    free_port,
    service_env,
    settings_for,
)


class LiveService:
    """Redis, one worker and gunicorn, as a deployment runs them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis = RedisServer(directory / "redis")
        self.redis.start()
        self.metrics_dir = fresh_multiproc_dir(directory / "metrics")
        self.worker_metrics_port = free_port()
        self.env = service_env(
            self.redis.url,
            directory / "data",
            PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir),
            WORKER_METRICS_PORT=str(self.worker_metrics_port),
            LOG_FORMAT="json",
        )
        self.settings = settings_for(self.env)
        self.worker = WorkerProcess(self.env, directory / "worker.log")
        self.worker.start()
        self.api = GunicornProcess(self.env, directory / "api.log")
        try:
            self.worker.wait_ready(self.redis.client())
            self.api.wait_ready()
        except BaseException:
            # The fixture's teardown never runs for a failed setup: a
            # gunicorn left here outlived a whole test run.
            self.stop()
            raise
        self.url = self.api.url

    def add_user(self, tenant: str) -> tuple[str, str]:
        """A user with read and write in ``tenant``; returns name and password."""
        from packagerepo.accounts import Accounts

        username = f"u-{uuid.uuid4().hex[:10]}"
        password = f"pw-{uuid.uuid4().hex}"
        Accounts(self.settings).add_user(
            username, password, tenant=tenant, scopes=["read", "write"]
        )
        return username, password

    def login(self, tenant: str) -> dict[str, str]:
        username, password = self.add_user(tenant)
        answer = requests.post(
            f"{self.url}/auth/login",
            json={"username": username, "password": password},
            timeout=10,
        )
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    def register_test_workflows(self, tenant: str) -> None:
        from loader import Catalog

        catalog = Catalog(BUNDLED_WORKFLOWS, self.settings.data_dir)
        for document in (GREET, SLOW):
            catalog.save(tenant, document["id"], document)

    def stop(self) -> None:
        self.api.stop()
        self.worker.stop(9)
        self.redis.stop()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    service = LiveService(tmp_path_factory.mktemp("live"))
    yield service
    service.stop()


@pytest.fixture
def live_tenant(live: LiveService) -> str:
    tenant = f"t{uuid.uuid4().hex[:12]}"
    live.register_test_workflows(tenant)
    return tenant


@pytest.fixture
def live_auth(live: LiveService, live_tenant: str) -> dict[str, str]:
    return live.login(live_tenant)
