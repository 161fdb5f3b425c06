"""The Celery app, configured from the same settings as the API.

Late acknowledgement, rejection on a lost worker and a prefetch of one mean a
message is only gone once its job has ended; the visibility timeout is longer
than the longest execution a workflow may ask for (3600 s). Celery's result
backend is not used: job results live in the job record (design §5).
"""

from __future__ import annotations

import math

import redis
from celery import Celery
from celery.signals import setup_logging

from loader.limits import MAX_EXECUTION_TIMEOUT
from packagerepo import keys
from packagerepo.config import Settings
from packagerepo.logs import configure_logging

EXECUTE_TASK = "packagerepo.execute"
WEBHOOK_TASK = "packagerepo.deliver_webhook"
QUEUE = "packagerepo"
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
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
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
    )
    return app


celery_app = make_celery(Settings.from_env())


@setup_logging.connect
def _configure_worker_logging(**_kwargs: object) -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)


def enqueue_job(
    app: Celery,
    job_id: str,
    timeout_seconds: float | None = None,
    *,
    tenant: str,
) -> None:
    """Send the message for ``job_id`` of ``tenant``; fails fast when the
    broker is down. The tenant travels in the message so the worker need
    not look it up.

    With the job's ``timeout_seconds`` the message carries a hard time limit
    just past it; without (a re-send), the task's own limit for the longest
    allowed execution applies.
    """
    limit = (
        None
        if timeout_seconds is None
        else math.ceil(timeout_seconds) + HARD_LIMIT_GRACE_SECONDS
    )
    app.send_task(
        EXECUTE_TASK,
        args=[job_id, tenant],
        queue=QUEUE,
        retry=False,
        time_limit=limit,
    )


def send_webhook(app: Celery, job_id: str) -> None:
    """Ask a worker to deliver the ended job to its callback URL."""
    app.send_task(WEBHOOK_TASK, args=[job_id], queue=QUEUE)


def queue_depth(client: redis.Redis) -> int:
    """Messages waiting in the service's Celery queue, every priority step."""
    with client.pipeline(transaction=False) as pipe:
        for name in keys.celery_queue_lists(QUEUE):
            pipe.llen(name)
        return sum(pipe.execute())
