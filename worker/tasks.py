"""The one Celery task, and what each worker process starts beside it.

``execute`` runs one whole workflow execution for a job id. When a worker
process starts it builds its runner, starts the lease reaper and runs the
``server`` start-up workflow, whose report ``/health/ready`` shows.

Shutdown: SIGTERM to the worker's main process is Celery's warm shutdown, so
the job a pool process runs is finished before the worker exits. A pool
process that dies anyway (SIGKILL, or SIGTERM sent to the whole process
group) leaves its job's lease to lapse; a reaper then hands the job back to
the queue. Either way no job is lost or left ``running``.

With ``WORKER_METRICS_PORT`` set, the main process serves the metrics of all
its pool processes on that port (``packagerepo.metrics``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from packagerepo import keys, liveness, metrics, webhooks
from packagerepo.config import Settings
from packagerepo.errors import PackageRepoError
from packagerepo.jobs import public_fields
from packagerepo.logs import log_context
from packagerepo.services import redis_client
from worker.celery_app import (
    EXECUTE_TASK,
    HARD_LIMIT_GRACE_SECONDS,
    MAX_EXECUTION_SECONDS,
    QUEUE,
    WEBHOOK_TASK,
    celery_app,
    enqueue_job,
    send_webhook,
)
from worker.reaper import Reaper
from worker.runner import ServerReport, current_runner

log = logging.getLogger(__name__)

WEBHOOK_ATTEMPT_SECONDS = 20

_reaper: Reaper | None = None
_server: ServerReport | None = None


class CountingReaper(Reaper):
    """The lease reaper, counting the jobs it acts on."""

    def reap_once(self) -> int:
        acted = super().reap_once()
        if acted:
            metrics.LEASES_REAPED.inc(acted)
        return acted


def _enqueue(tenant: str, job_id: str) -> None:
    client = current_runner(_enqueue, _send_webhook).services.redis
    enqueue_job(celery_app, client, job_id, tenant=tenant)


def _send_webhook(job_id: str) -> None:
    send_webhook(celery_app, job_id)


# The hard limit is the backstop for a pool process stuck where the engine's
# cooperative timeouts cannot reach (C code holding the GIL); a message from
# the API carries a tighter one, sized from its workflow.
@celery_app.task(
    name=EXECUTE_TASK,
    ignore_result=True,
    time_limit=MAX_EXECUTION_SECONDS + HARD_LIMIT_GRACE_SECONDS,
)
def execute(job_id: Any, tenant: Any = None) -> None:
    """Run the job; every outcome is written to the job record, not returned.

    Messages sent before the tenant travelled with them carry the job id
    alone; the runner looks the tenant up for those. Arguments of any other
    shape (a forged or corrupt message) are dropped.
    """
    if not isinstance(job_id, str) or not isinstance(tenant, str | None):
        log.warning("A malformed execute message was dropped.")
        return
    current_runner(_enqueue, _send_webhook).run(job_id, tenant)


# A receiver that dribbles its status line and headers could hold the pool
# process; Celery's soft time limit ends the attempt (the hard one, the
# process).
@celery_app.task(
    name=WEBHOOK_TASK,
    bind=True,
    ignore_result=True,
    max_retries=None,
    soft_time_limit=WEBHOOK_ATTEMPT_SECONDS,
    time_limit=WEBHOOK_ATTEMPT_SECONDS + 10,
)
def deliver_webhook(self: Task[Any, Any], job_id: str) -> None:
    """POST the ended job to its callback URL, retrying with backoff.

    Every attempt is recorded on the job; Celery's own retry schedules the
    next one, ``WEBHOOK_BACKOFF_SECONDS * 2**n`` later.
    """
    services = current_runner(_enqueue, _send_webhook).services
    settings = services.settings
    tenant = services.jobs.tenant_of(job_id)
    if tenant is None:
        return

    with log_context(tenant=tenant, job=job_id):
        job = services.jobs.get(tenant, job_id)
        try:
            attempt = webhooks.deliver(job["callback_url"], _public(job), settings)
        except PackageRepoError as refused:
            attempt = {"ok": False, "error": refused.code, "url": job["callback_url"]}
        except SoftTimeLimitExceeded:
            attempt = {"ok": False, "error": "TIMEOUT", "url": job["callback_url"]}
        count = services.jobs.record_delivery(tenant, job_id, attempt)
        if attempt["ok"]:
            log.info("Webhook for job %s was delivered.", job_id)
            return
        if (
            count >= settings.webhook_max_attempts
            or attempt.get("error") == "INVALID_REQUEST"
        ):
            log.warning(
                "Webhook for job %s was given up after %d attempts.", job_id, count
            )
            return
        log.info(
            "Webhook for job %s failed; attempt %d will follow.", job_id, count + 1
        )
        raise self.retry(countdown=settings.webhook_backoff_seconds * 2 ** (count - 1))


def _public(job: dict[str, Any]) -> dict[str, Any]:
    """The ended job as the API shows it, less the deliveries being made."""
    view = public_fields(job)
    del view["deliveries"]
    return view


def _runs_jobs() -> bool:
    """Whether this worker consumes the job queue (``-Q``): a worker of
    webhook deliveries only neither reports to /health/ready nor reaps."""
    consumed = celery_app.amqp.queues.consume_from
    return not consumed or QUEUE in consumed


@worker_process_init.connect
def _start_process(**_kwargs: object) -> None:
    global _reaper
    if not _runs_jobs():
        return
    runner = current_runner(_enqueue, _send_webhook)
    server = ServerReport(runner.services, runner.worker_name)
    try:
        server.publish()
    except Exception:
        log.exception("The server start-up workflow could not run.")
    global _server
    _server = server
    _reaper = CountingReaper(
        runner.services, _enqueue, _send_webhook, on_tick=server.keep_alive
    )
    _reaper.start()
    log.info("Worker process %s is ready.", runner.worker_name)


@worker_process_shutdown.connect
def _stop_process(**_kwargs: object) -> None:
    if _reaper is not None:
        _reaper.stop()
    if _server is not None:
        # A stopping worker leaves /health/ready at once, not when its
        # report expires.
        _server.withdraw()


class ConsumerHeartbeat:
    """The main process's sign of life: it is the process that takes
    messages, so a stopped or hung consumer drops out of /health/ready even
    while its pool processes still answer."""

    INTERVAL_SECONDS = 2.0

    def __init__(self) -> None:
        settings = Settings.from_env()
        self.redis = redis_client(settings.redis_url)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.key = keys.worker_heartbeat(self.name)
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.redis.delete(self.key)
            liveness.leave(self.redis, keys.live_consumers(), self.name)

    def _beat(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.redis.set(self.key, "1", ex=keys.WORKER_HEARTBEAT_TTL)
                liveness.beat(
                    self.redis,
                    keys.live_consumers(),
                    self.name,
                    keys.WORKER_HEARTBEAT_TTL,
                )
            self._stop.wait(self.INTERVAL_SECONDS)


_heartbeat: ConsumerHeartbeat | None = None


@worker_ready.connect
def _start_heartbeat(**_kwargs: object) -> None:
    global _heartbeat
    if not _runs_jobs():
        return
    _heartbeat = ConsumerHeartbeat()
    _heartbeat.start()


@worker_shutdown.connect
def _stop_heartbeat(**_kwargs: object) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


@worker_init.connect
def _serve_metrics(**_kwargs: object) -> None:
    port = os.environ.get("WORKER_METRICS_PORT")
    directory = metrics.multiproc_dir()
    if not port:
        return
    if directory is None:
        log.warning("WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR; not serving.")
        return
    metrics.serve_worker_metrics(int(port), directory)
