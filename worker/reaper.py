"""The lease reaper: no job stays ``running`` after its worker died.

Every worker process runs one reaper thread. It looks for leases that
lapsed, and for each one either puts the job back on the queue (while it has
attempts left) or ends it ``failed`` with ``WORKER_LOST``. The transitions
are atomic scripts in the job store, so with several reapers exactly one of
them acts on a given job; only that one re-sends the message.

NOTE: a worker killed in the milliseconds between receiving a message and
claiming its job holds no lease yet; that message comes back only when
kombu restores unacknowledged messages after the visibility timeout (two
hours). Tracking "delivered but unclaimed" jobs (kombu's ``unacked_index``)
would close the gap; with a prefetch of one the window is a single message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from packagerepo.jobs import JobStatus
from packagerepo.logs import log_context
from packagerepo.services import Services
from worker.runner import release_deferred

log = logging.getLogger(__name__)

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
        enqueue: Callable[[str], None],
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
        self._release_deferred()
        return acted

    def _release_deferred(self) -> None:
        """Safety net: deferred jobs whose tenant has room, whatever freed it
        (a reaped lease, a job that ended while its worker was stopping)."""
        for tenant in self.services.jobs.tenants_with_deferred_jobs():
            released = release_deferred(self.services, tenant, self.enqueue)
            if released:
                log.info("Re-sent %d deferred jobs of tenant %s.", released, tenant)

    def _reap(self, tenant: str, job_id: str) -> int:
        jobs = self.services.jobs
        attempts = jobs.field(tenant, job_id, "attempts") or 0
        if attempts < self.services.settings.max_attempts:
            if not jobs.requeue(tenant, job_id):
                return 0
            log.warning(
                "Job %s lost its worker; re-queued (attempt %d).", job_id, attempts
            )
            jobs.publish(tenant, job_id, "status", {"status": "queued"})
            self.enqueue(job_id)
            return 1

        if not jobs.finish(tenant, job_id, JobStatus.FAILED, error=WORKER_LOST):
            return 0
        log.error("Job %s lost its worker %d times; it failed.", job_id, attempts)
        if jobs.field(tenant, job_id, "callback_url"):
            self.send_webhook(job_id)
        return 1
