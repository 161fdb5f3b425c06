"""The lease reaper: no job stays ``running`` after its worker died.

Every worker process runs one reaper thread. It looks for leases that
lapsed, and for each one either puts the job back on the queue (while it has
attempts left) or ends it ``failed`` with ``WORKER_LOST``. The transitions
are atomic scripts in the job store, so with several reapers exactly one of
them acts on a given job; only that one re-sends the message.

A worker can also die after receiving a message but before claiming its
job (no lease yet). Kombu would restore that message only after the
visibility timeout (two hours), so the reaper also looks at kombu's
unacknowledged deliveries: one older than two lease periods whose job is
still ``queued`` was orphaned (a live worker claims within milliseconds, and
with a prefetch of one it holds no other message), so the reaper drops the
delivery and sends the job again.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from packagerepo import keys
from packagerepo.jobs import JobStatus
from packagerepo.logs import log_context
from packagerepo.services import Services
from worker.celery_app import queue_depth
from worker.outcome import timeout_error
from worker.runner import Enqueue, release_deferred

log = logging.getLogger(__name__)

SENT_GRACE_LEASES = 10
ORPHAN_SCAN_MAX = 1000
"""Deliveries, oldest first, a reaper pass looks at for a dead worker's."""

WORKER_LOST = {
    "code": "WORKER_LOST",
    "message": "The worker running this job stopped answering.",
    "status": 500,
}


class Reaper:
    """Re-queues or fails jobs whose lease lapsed, on a background thread."""

    def __init__(
        self,
        services: Services,
        enqueue: Enqueue,
        send_webhook: Callable[[str], None],
        *,
        interval: float | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.services = services
        self.enqueue = enqueue
        self.send_webhook = send_webhook
        self.interval = interval or max(0.5, services.settings.lease_seconds / 3)
        self.on_tick = on_tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reap_once()
                if self.on_tick:
                    self.on_tick()
            except Exception:
                log.exception("The reaper's pass failed; it will try again.")

    def reap_once(self) -> int:
        """Handle every lapsed lease once; returns how many jobs it acted on."""
        acted = 0
        for tenant, job_id in self.services.jobs.expired_leases():
            with log_context(tenant=tenant, job=job_id):
                acted += self._reap(tenant, job_id)
        acted += self._resend_orphaned_deliveries()
        acted += self._resend_unseen_messages()
        self._release_deferred()
        return acted

    def _resend_unseen_messages(self) -> int:
        """Safety net: a job still ``queued`` whose message no worker has seen
        for a long while (``SENT_GRACE_LEASES`` lease periods, at least ten
        seconds) lost its message (a worker killed between taking it from the
        queue and recording it, or a reaper killed between re-queueing a job
        and sending it). Its message is sent again. Only while the queue is
        empty: a job behind a deep backlog is not lost, only waiting, and
        re-sending every waiting job would double the backlog."""
        jobs = self.services.jobs
        if queue_depth(self.services.redis) > 0:
            return 0
        grace = max(10.0, SENT_GRACE_LEASES * self.services.settings.lease_seconds)
        resent = 0
        for tenant, job_id in jobs.unseen_messages(time.time() - grace):
            if jobs.status(tenant, job_id) is not JobStatus.QUEUED:
                jobs.forget_sent(tenant, job_id)
                continue
            with log_context(tenant=tenant, job=job_id):
                log.warning("Job %s's message was not seen; it is sent again.", job_id)
            jobs.mark_sent(tenant, job_id)
            self.enqueue(tenant, job_id)
            resent += 1
        return resent

    def _resend_orphaned_deliveries(self) -> int:
        client = self.services.redis
        unacked, index = keys.celery_unacked()
        cutoff = time.time() - 2 * self.services.settings.lease_seconds
        resent = 0
        # Deliveries held on purpose (a webhook's retry waiting for its eta)
        # stay in the index: look past them, in one read of their messages.
        tags = [
            tag
            for tag in client.zrangebyscore(
                index, 0, cutoff, start=0, num=ORPHAN_SCAN_MAX
            )
            if isinstance(tag, bytes)
        ]
        raws = client.hmget(unacked, tags) if tags else []
        for tag, raw in zip(tags, raws, strict=True):
            job_id = _execute_job_id(raw if isinstance(raw, bytes) else None)
            tenant = self.services.jobs.tenant_of(job_id) if job_id else None
            if job_id is None or tenant is None:
                continue
            if self.services.jobs.status(tenant, job_id) is not JobStatus.QUEUED:
                continue
            # Only the reaper that removes the delivery sends the job again.
            with client.pipeline() as pipe:
                pipe.zrem(index, tag)
                pipe.hdel(unacked, tag)
                removed, _ = pipe.execute()
            if removed:
                log.warning(
                    "Job %s was delivered to a worker that died; re-sent.", job_id
                )
                self.services.jobs.mark_sent(tenant, job_id)
                self.enqueue(tenant, job_id)
                resent += 1
        return resent

    def _release_deferred(self) -> None:
        """Safety net: deferred jobs whose tenant has room, whatever freed it
        (a reaped lease, a job that ended while its worker was stopping)."""
        for tenant in self.services.jobs.tenants_with_deferred_jobs():
            released = release_deferred(self.services, tenant, self.enqueue)
            if released:
                log.info("Re-sent %d deferred jobs of tenant %s.", released, tenant)

    def _reap(self, tenant: str, job_id: str) -> int:
        jobs = self.services.jobs
        fields = jobs.fields(
            tenant, job_id, "started_at", "timeout_seconds", "attempts"
        )
        if _overdue(fields):
            return self._end(tenant, job_id, timeout_error(), "outlived its timeout")
        attempts = fields["attempts"] or 0
        if attempts < self.services.settings.max_attempts:
            if not jobs.requeue(tenant, job_id):
                return 0
            log.warning(
                "Job %s lost its worker; re-queued (attempt %d).", job_id, attempts
            )
            jobs.publish(tenant, job_id, "status", {"status": "queued"})
            self.enqueue(tenant, job_id)
            return 1

        return self._end(tenant, job_id, WORKER_LOST, f"lost {attempts} workers")

    def _end(self, tenant: str, job_id: str, error: dict[str, Any], why: str) -> int:
        jobs = self.services.jobs
        if not jobs.finish(tenant, job_id, JobStatus.FAILED, error=error):
            return 0
        log.error("Job %s %s; it failed with %s.", job_id, why, error["code"])
        if jobs.field(tenant, job_id, "callback_url"):
            self.send_webhook(job_id)
        return 1


def _overdue(fields: dict[str, Any]) -> bool:
    """Whether a run that started at ``started_at`` is past its timeout.

    Such a job's worker was most likely killed by Celery's hard time limit
    for being stuck: running it again would only get stuck again.
    """
    started_at, timeout = fields.get("started_at"), fields.get("timeout_seconds")
    if not isinstance(started_at, str) or not isinstance(timeout, (int, float)):
        return False
    started = datetime.fromisoformat(started_at).timestamp()
    return time.time() > started + timeout


def _execute_job_id(raw: bytes | None) -> str | None:
    """The job id in a kombu delivery of the execute task, else None."""
    from worker.celery_app import EXECUTE_TASK

    try:
        message = json.loads(raw or b"null")[0]
        if message["headers"]["task"] != EXECUTE_TASK:
            return None
        args = json.loads(base64.b64decode(message["body"]))[0]
        return str(args[0])
    except (ValueError, LookupError, TypeError):
        return None
