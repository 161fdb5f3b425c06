"""The floor: a bare Celery app whose tasks do nothing.

Same broker settings as ``worker.celery_app`` (late acknowledgement, a
prefetch of one, JSON, no events), on the same Redis, so the only difference
the end-to-end numbers show is the project's own work. ``noop`` stores its
result in Redis so a client can wait for it (a round trip); ``noop_ignored``
stores nothing, like the project's ``execute`` task, for the drain rate.

The worker is started with ``-A bench.floor_app``; the Redis URL comes from
``BENCH_FLOOR_REDIS_URL``.
"""

from __future__ import annotations

import os

from celery import Celery

FLOOR_QUEUE = "bench-floor"
NOOP_TASK = "bench.noop"
NOOP_IGNORED_TASK = "bench.noop_ignored"


def make_floor_app(redis_url: str) -> Celery:
    """A Celery app configured like the project's, plus a result backend."""
    app = Celery("bench-floor", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=FLOOR_QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        result_expires=600,
    )
    return app


app = make_floor_app(
    os.environ.get("BENCH_FLOOR_REDIS_URL", "redis://127.0.0.1:6379/0")
)


@app.task(name=NOOP_TASK)
def noop() -> None:
    """Nothing: the round trip is the measurement."""


@app.task(name=NOOP_IGNORED_TASK, ignore_result=True)
def noop_ignored() -> None:
    """Nothing, and no result stored."""
