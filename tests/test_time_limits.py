"""The backstop behind the engine's cooperative timeouts: a pool process
stuck past its job's execution timeout is killed by Celery's hard time limit,
and the reaper ends such a job EXECUTION_TIMEOUT instead of re-running it."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from packagerepo import keys
from packagerepo.jobs import JobStore
from tests.conftest import GREET
from worker.celery_app import (
    EXECUTE_TASK,
    HARD_LIMIT_GRACE_SECONDS,
    QUEUE,
    execute_message,
    make_celery,
)
from worker.reaper import Reaper

pytestmark = pytest.mark.integration


def _queued_messages(redis_client) -> list[dict]:
    raw = [
        m
        for name in keys.celery_queue_lists(QUEUE)
        for m in redis_client.lrange(name, 0, -1)
    ]
    return [json.loads(message) for message in raw]


def test_the_execute_message_carries_a_hard_time_limit_past_the_workflow_timeout(
    isolated_stack,
):
    stack = isolated_stack()  # no worker: the message stays in the queue
    services = stack.app.extensions["packagerepo"]
    tenant = f"t{uuid.uuid4().hex[:12]}"
    document = {
        **GREET,
        "settings": {**GREET.get("settings", {}), "executionTimeout": 7},
    }
    services.catalog.save(tenant, document["id"], document)
    identity = services.accounts.add_user(
        f"u-{uuid.uuid4().hex[:8]}", "pw-limit", tenant=tenant, scopes=["read"]
    )
    token, _ = services.accounts.issue_token(identity)

    answer = stack.app.test_client().post(
        "/v1/workflows/greet/execute",
        json={"name": "x"},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert answer.status_code == 202
    job_id = answer.get_json()["job"]["id"]
    assert services.jobs.get(tenant, job_id)["timeout_seconds"] == 7
    (message,) = _queued_messages(services.redis)
    assert json.loads(base64.b64decode(message["body"]))[0] == [job_id, tenant]
    hard, _soft = message["headers"]["timelimit"]
    assert hard == 7 + HARD_LIMIT_GRACE_SECONDS


def test_the_execute_message_is_the_one_send_task_would_store(isolated_stack):
    """The API pushes the message itself, in the job's own transaction; it
    must stay what kombu stores, or workers would stop understanding it
    after an upgrade."""
    stack = isolated_stack()  # no worker: the messages stay in the queue
    app = make_celery(stack.app.extensions["packagerepo"].settings)
    client = stack.redis.client()

    app.send_task(
        EXECUTE_TASK, args=["job-1", "acme"], queue=QUEUE, retry=False, time_limit=37
    )
    (theirs,) = _queued_messages(client)
    client.delete(QUEUE)
    client.lpush(*execute_message(app, "job-1", 7, tenant="acme"))
    (ours,) = _queued_messages(client)

    per_message = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to"}
    for part in ("headers", "properties"):
        assert ours[part].keys() == theirs[part].keys()
        for name in ours[part].keys() - per_message:
            assert ours[part][name] == theirs[part][name], (part, name)
    assert ours.keys() == theirs.keys()
    for name in ours.keys() - {"headers", "properties"}:
        assert ours[name] == theirs[name], name


def _lapsed_job(services, tenant: str, timeout_seconds: float) -> str:
    """A job claimed by a worker that died at once: its lease has lapsed."""
    jobs = JobStore(services.redis, lease_seconds=0)
    job = jobs.create(
        tenant=tenant,
        workflow="greet",
        digest="d",
        input={},
        submitted_by="t",
        timeout_seconds=timeout_seconds,
    )
    assert jobs.claim(tenant, job["id"], "killed-worker")[0] == "claimed"
    time.sleep(0.05)
    return job["id"]


def test_a_lapsed_job_past_its_execution_timeout_fails_instead_of_running_again(
    isolated_stack,
):
    services = isolated_stack().app.extensions["packagerepo"]
    job_id = _lapsed_job(services, "overdue", timeout_seconds=0.01)
    sent: list[str] = []

    reaper = Reaper(services, lambda _tenant, job: sent.append(job), sent.append)
    acted = reaper.reap_once()

    ended = services.jobs.get("overdue", job_id)
    assert acted == 1 and sent == []
    assert ended["status"] == "failed"
    assert ended["error"]["code"] == "EXECUTION_TIMEOUT"


def test_a_lapsed_job_within_its_execution_timeout_is_queued_again(isolated_stack):
    services = isolated_stack().app.extensions["packagerepo"]
    job_id = _lapsed_job(services, "lapsed", timeout_seconds=300)
    sent: list[str] = []

    Reaper(services, lambda _tenant, job: sent.append(job), sent.append).reap_once()

    assert sent == [job_id]
    assert services.jobs.get("lapsed", job_id)["status"] == "queued"
