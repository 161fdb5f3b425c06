"""The Celery app, configured from the same settings as the API.

Late acknowledgement, rejection on a lost worker and a prefetch of one mean a
message is only gone once its job has ended; the visibility timeout is longer
than the longest execution a workflow may ask for (3600 s). Celery's result
backend is not used: job results live in the job record (design §5).
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from typing import Any

import redis
from celery import Celery
from celery.signals import setup_logging
from kombu import serialization

from loader.limits import MAX_EXECUTION_TIMEOUT
from packagerepo import keys
from packagerepo.config import Settings
from packagerepo.logs import configure_logging

EXECUTE_TASK = "packagerepo.execute"
WEBHOOK_TASK = "packagerepo.deliver_webhook"
QUEUE = keys.EXECUTE_QUEUE
WEBHOOK_QUEUE = keys.WEBHOOK_QUEUE
TRANSPORT = "worker.transport:Transport"
"""kombu's Redis transport, made to set aside queue entries that are no
message and to reuse one client for its bookkeeping (``worker.transport``)."""
MAX_EXECUTION_SECONDS = int(MAX_EXECUTION_TIMEOUT)
HARD_LIMIT_GRACE_SECONDS = 30
"""How long past its job's execution timeout a pool process may run before
Celery kills it: the engine's own, cooperative timeouts cannot stop a node
stuck in C code that holds the GIL."""


def make_celery(settings: Settings) -> Celery:
    """A Celery app bound to ``settings``."""
    # `include` loads the tasks in workers only: the API sends by name and never
    # imports the engine.
    app = Celery("packagerepo", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        broker_transport=TRANSPORT,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        # Retries of a delivery go back to the webhook queue too.
        task_routes={WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE}},
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": 2 * MAX_EXECUTION_SECONDS,
            "socket_connect_timeout": 1,
            "socket_timeout": 5,
        },
        broker_connection_timeout=2,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        # A pool process that grew past this (Python keeps the memory of a
        # big run) is replaced once its job has ended.
        worker_max_memory_per_child=settings.worker_max_memory_mib * 1024,
    )
    return app


celery_app = make_celery(Settings.from_env())


@setup_logging.connect
def _configure_worker_logging(**_kwargs: object) -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)


def execute_message(
    app: Celery,
    job_id: str,
    timeout_seconds: float | None = None,
    *,
    tenant: str,
) -> tuple[str, str]:
    """The execute message for ``job_id`` of ``tenant``, and the Redis list
    it is pushed on: ``LPUSH`` of the two is what ``app.send_task`` would
    do, so the API can push it in the transaction that creates the job
    (one round trip, and never a job without its message or the reverse).

    Celery builds the message (``amqp.as_task_v2``, protocol 2); the
    envelope around it is the one kombu's Redis transport stores for a
    message sent to a queue by name (``tests/test_time_limits.py`` holds it
    against what ``send_task`` stores, so a kombu upgrade that changes it
    fails there). The tenant travels with the message so the worker need not
    look it up. With the job's ``timeout_seconds`` the message carries a hard
    time limit just past it; without (a re-send), the task's own limit for
    the longest allowed execution applies.
    """
    limit = (
        None
        if timeout_seconds is None
        else math.ceil(timeout_seconds) + HARD_LIMIT_GRACE_SECONDS
    )
    task_id = str(uuid.uuid4())
    # As send_task passes them: a list of args (the stubs say tuple, and
    # argsrepr would differ) and no ignore_result (the task's own applies).
    as_sent: dict[str, Any] = {"args": [job_id, tenant], "ignore_result": None}
    message = app.amqp.as_task_v2(task_id, EXECUTE_TASK, time_limit=limit, **as_sent)
    content_type, encoding, body = serialization.dumps(message.body, "json")
    envelope = {
        "body": base64.b64encode(_bytes(body)).decode(),
        "content-encoding": encoding,
        "content-type": content_type,
        "headers": message.headers,
        "properties": {
            **message.properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return QUEUE, json.dumps(envelope)


def _bytes(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body


def enqueue_job(
    app: Celery,
    client: redis.Redis,
    job_id: str,
    timeout_seconds: float | None = None,
    *,
    tenant: str,
) -> None:
    """Send the message for ``job_id`` of ``tenant`` (see ``execute_message``)
    on its own; fails fast when Redis is down."""
    queue, payload = execute_message(app, job_id, timeout_seconds, tenant=tenant)
    client.lpush(queue, payload)


def send_webhook(app: Celery, job_id: str) -> None:
    """Ask a webhook worker to deliver the ended job to its callback URL."""
    app.send_task(WEBHOOK_TASK, args=[job_id], queue=WEBHOOK_QUEUE)


def queue_depth(client: redis.Redis) -> int:
    """Messages waiting in the service's Celery queue, every priority step."""
    with client.pipeline(transaction=False) as pipe:
        for name in keys.celery_queue_lists(QUEUE):
            pipe.llen(name)
        return sum(pipe.execute())
