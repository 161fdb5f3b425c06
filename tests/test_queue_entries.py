"""Queue entries a worker cannot use: whatever sits on the Celery queue, the
worker sets it aside, says so once, and goes on with the next message."""

from __future__ import annotations

import base64
import json
import time

import pytest
from kombu import Connection

from packagerepo import keys
from tests.conftest import settings_for
from tests.ops.test_metrics import value
from tests.test_jobs import submit, wait_for_status
from tests.test_lifecycle import _register
from worker.celery_app import (
    EXECUTE_TASK,
    QUEUE,
    TRANSPORT,
    execute_message,
    make_celery,
)

pytestmark = pytest.mark.integration

UNUSABLE = [
    b"not json at all",
    b"\xff\xfe binary",
    json.dumps([1, 2, 3]).encode(),
    json.dumps({"body": "no envelope"}).encode(),
    json.dumps(
        {
            "body": "!!!not base64",
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": {},
            "properties": {"body_encoding": "base64", "delivery_tag": "t"},
        }
    ).encode(),
]


def _a_job_runs_after(stack, entries: list[bytes]):
    """Queue ``entries`` ahead of a real job, then start a worker: the job
    runs, the worker lives on and every message is acknowledged (through
    the channel's shared client). Answers the API client and Redis."""
    client = stack.app.test_client()
    auth = _register(stack, "acme")
    redis = stack.redis.client()
    # Workers take from the right: the entries come out first, in this order.
    for entry in entries:
        redis.lpush(QUEUE, entry)
    job_id = submit(client, auth, "greet", {"name": "after"}).get_json()["job"]["id"]

    worker = stack.add_worker()

    job = wait_for_status(client, auth, job_id, {"succeeded", "failed"}, timeout=30)
    assert job["status"] == "succeeded"
    assert worker.process.poll() is None
    unacked, _index = keys.celery_unacked()
    assert _eventually(lambda: redis.hlen(unacked) == 0)
    return client, redis


def test_entries_that_are_no_message_are_set_aside_and_the_worker_goes_on(
    isolated_stack,
):
    client, redis = _a_job_runs_after(isolated_stack(), UNUSABLE)

    assert redis.lrange(keys.unusable_messages(), 0, -1) == UNUSABLE
    text = client.get("/metrics").get_data(as_text=True)
    assert value(text, "packagerepo_unusable_messages") == len(UNUSABLE)


def _envelope(app, body: bytes, task: str = EXECUTE_TASK) -> bytes:
    _queue, payload = execute_message(app, "0" * 32, tenant="acme")
    envelope = json.loads(payload)
    envelope["body"] = base64.b64encode(body).decode()
    envelope["headers"]["task"] = task
    return json.dumps(envelope).encode()


def test_messages_celery_refuses_are_dropped_by_celery_and_the_worker_goes_on(
    isolated_stack,
):
    stack = isolated_stack()
    celery = make_celery(settings_for(stack.env))
    refused = [
        _envelope(celery, b"\x00 not the JSON the content type says"),
        _envelope(celery, b"[[], {}, {}]", task="no.such.task"),
    ]

    _client, redis = _a_job_runs_after(stack, refused)

    # Celery logs and acknowledges these itself: nothing to set aside.
    assert redis.llen(keys.unusable_messages()) == 0


def test_the_set_aside_list_keeps_the_newest_entries(redis_server):
    channel = _channel(redis_server.url)
    redis = redis_server.client()
    redis.delete(keys.unusable_messages())
    for number in range(keys.UNUSABLE_MESSAGES_MAX + 5):
        channel._set_aside(str(number).encode(), ValueError("x"))
    kept = redis.lrange(keys.unusable_messages(), 0, -1)
    assert len(kept) == keys.UNUSABLE_MESSAGES_MAX
    assert kept[0] == b"5" and kept[-1] == str(keys.UNUSABLE_MESSAGES_MAX + 4).encode()


def test_the_channel_reuses_one_client_for_its_bookkeeping(redis_server):
    channel = _channel(redis_server.url)
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
        assert first.ping()
    given = redis_server.client()
    with channel.conn_or_acquire(given) as chosen:
        assert chosen is given


def _channel(url: str):
    connection = Connection(url, transport=TRANSPORT)
    return connection.default_channel


def _eventually(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()
