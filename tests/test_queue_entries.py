"""Queue entries a worker cannot use: whatever sits on the Celery queue, the
worker sets it aside, says so once, and goes on with the next message."""

from __future__ import annotations

import base64
import bz2
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


def test_messages_that_are_not_the_services_own_are_set_aside(isolated_stack):
    """A body that does not decode and an unknown task used to be dropped by
    Celery with a log; they are set aside like every other entry now."""
    stack = isolated_stack()
    celery = make_celery(settings_for(stack.env))
    refused = [
        _envelope(celery, b"\x00 not the JSON the content type says"),
        _envelope(celery, b"[[], {}, {}]", task="no.such.task"),
    ]

    _client, redis = _a_job_runs_after(stack, refused)

    assert redis.lrange(keys.unusable_messages(), 0, -1) == refused


def _celery_shaped(
    body: object, headers: dict, properties: dict | None = None
) -> bytes:
    """An envelope as kombu stores one, around a JSON ``body``."""
    return json.dumps(
        {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": headers,
            "properties": {
                "delivery_tag": "t1",
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": QUEUE},
                **(properties or {}),
            },
        }
    ).encode()


def _bomb() -> bytes:
    """A hundred bytes of bzip2 that kombu would expand to 50 MiB."""
    envelope = json.loads(_celery_shaped([], {**EXECUTE}))
    expanded = b"[" + b" " * (50 * 1024 * 1024) + b"]"
    envelope["body"] = base64.b64encode(bz2.compress(expanded)).decode()
    envelope["headers"]["compression"] = "application/x-bz2"
    return json.dumps(envelope).encode()


ARGS = [["0" * 32, "acme"], {}, {}]
EXECUTE = {"task": EXECUTE_TASK, "id": "i"}
# Found by an adversarial pass: each of these stopped the worker (and with
# it `packagerepo run`), or made its consumer reconnect for ever, the entry
# going back on the queue to do it again after a restart.
SHAPED_BADLY = [
    _celery_shaped(ARGS, EXECUTE, {"delivery_tag": None}),
    _celery_shaped(ARGS, EXECUTE, {"delivery_tag": True}),
    _celery_shaped(ARGS, EXECUTE, {"delivery_tag": {"a": 1}}),
    _celery_shaped(ARGS, EXECUTE, {"delivery_info": "x"}),
    _celery_shaped(ARGS, EXECUTE, {"delivery_info": {"exchange": ""}}),
    _celery_shaped({"a": 1}, EXECUTE),
    _celery_shaped("hello", EXECUTE),
    _celery_shaped(ARGS, {**EXECUTE, "timelimit": ["abc", None]}),
    _celery_shaped(ARGS, {**EXECUTE, "timelimit": "abc"}),
    _celery_shaped(ARGS, {**EXECUTE, "timelimit": [float("nan"), None]}),
    _celery_shaped(ARGS, {**EXECUTE, "timelimit": [1e300, -1]}),
    _celery_shaped(ARGS, {"task": EXECUTE_TASK}),  # no id
    # Found by a fresh-user pass: no delivery info at all, and a null tag.
    b'{"body": "e30=", "properties": {"delivery_tag": "t2", "body_encoding": '
    b'"base64"}}',
    b'{"body": "e30=", "properties": {"delivery_tag": null}}',
    b"[" * 100_000 + b"]" * 100_000,
    # Found by a second adversarial pass: a worker that set these aside (or
    # ran them) was left wedged, looping or out of memory.
    _celery_shaped(ARGS, {**EXECUTE, "stamped_headers": 5}),
    _celery_shaped(ARGS, {**EXECUTE, "stamped_headers": [["x"]]}),
    _celery_shaped(ARGS, {**EXECUTE, "deep": json.loads("[" * 500 + "]" * 500)}),
    _celery_shaped(ARGS, {**EXECUTE, "compression": "application/x-bz2"}),
    _bomb(),
    _celery_shaped(ARGS, {**EXECUTE, "eta": "9999-12-31T23:59:59+00:00"}),
    _celery_shaped(ARGS, {**EXECUTE, "eta": "soon"}),
    _celery_shaped(["gid", {}], {"task": "celery.chord_unlock", "id": "i"}),
    _celery_shaped([ARGS[0], {}, {"callbacks": [{"task": "celery.group"}]}], EXECUTE),
    _celery_shaped([["x"] * 3, {}, {}], EXECUTE),
    _celery_shaped([ARGS[0], {"a": 1}, {}], EXECUTE),
]


def test_entries_shaped_almost_like_a_message_are_set_aside_too(isolated_stack):
    _client, redis = _a_job_runs_after(isolated_stack(), SHAPED_BADLY)

    kept = redis.lrange(keys.unusable_messages(), 0, -1)
    # As they were; the deeply nested one cut to the size limit.
    assert kept == [entry[: keys.UNUSABLE_MESSAGE_BYTES] for entry in SHAPED_BADLY]


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
