"""The task wrapper: one job from claim to terminal state.

This is the one place where exceptions become job errors. The runner claims
the job (a redelivered message for a job that ended or runs elsewhere does
nothing), holds a lease that a background thread renews, runs the engine,
records every node and ends the job in exactly one terminal state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from packagerepo import keys, liveness, metrics
from packagerepo.config import Settings
from packagerepo.errors import PackageRepoError, WorkflowChanged
from packagerepo.jobs import JobStatus, event_json, now_iso
from packagerepo.logs import log_context
from packagerepo.services import Services
from worker.graph import WorkflowGraph

if TYPE_CHECKING:
    from worker.engine import RunOutcome

log = logging.getLogger(__name__)

CANCELLED = {"code": "CANCELLED", "message": "The job was cancelled.", "status": 409}

END_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.1), retries=8)
"""How long a worker keeps trying to record a job's end: about six seconds
of pauses, each try on top of the client's own quick retry."""


Enqueue = Callable[[str, str], None]
"""Sends a job's message again: called with the tenant and the job id."""


def release_deferred(services: Services, tenant: str, enqueue: Enqueue) -> int:
    """Send again the tenant's deferred jobs that now fit under its cap.

    A tenant at its cap parks further jobs in its deferred set rather than
    cycling them through the queue, so other tenants' jobs queued behind
    them run at once; each job that ends makes room for the next.
    """
    released = services.jobs.release_deferred(
        tenant, services.settings.tenant_max_running
    )
    for job_id in released:
        enqueue(tenant, job_id)
    return len(released)


class RunningJobs:
    """The jobs this worker process runs, kept up to date by one thread.

    While any job runs, the thread wakes every ``FLUSH_SECONDS`` and writes
    the node records each job's observer has held back longer than that,
    and every third of ``LEASE_SECONDS`` renews every lease the process
    holds in one round trip. It sleeps while the process runs nothing.
    """

    FLUSH_SECONDS = 0.025

    def __init__(self, services: Services) -> None:
        self._jobs = services.jobs
        self._renew_every = max(0.2, services.settings.lease_seconds / 3)
        self._held: dict[tuple[str, str], JobObserver | None] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_failing = False

    @contextlib.contextmanager
    def holding(
        self, tenant: str, job_id: str, observer: JobObserver | None = None
    ) -> Iterator[None]:
        """Renew the job's lease, and flush its observer, while the block runs."""
        with self._lock:
            self._held[(tenant, job_id)] = observer
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._keep, name="running-jobs", daemon=True
                )
                self._thread.start()
        self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop((tenant, job_id), None)

    def _keep(self) -> None:
        renewed_at = time.monotonic()
        while True:
            self._wake.clear()
            with self._lock:
                held = dict(self._held)
            if not held:
                self._wake.wait()
                continue
            time.sleep(self.FLUSH_SECONDS)
            now = time.monotonic()
            self._flush(held, now - self.FLUSH_SECONDS)
            if now - renewed_at >= self._renew_every:
                renewed_at = now
                self._renew(list(held))

    def _flush(
        self, held: dict[tuple[str, str], JobObserver | None], older_than: float
    ) -> None:
        for observer in held.values():
            if observer is None:
                continue
            try:
                observer.flush(older_than)
            except Exception as error:
                # Once per failing stretch: the flush runs every 25 ms.
                if not self._flush_failing:
                    log.warning(
                        "Writing node records failed (%s); they stay held "
                        "and are written again.",
                        type(error).__name__,
                    )
                self._flush_failing = True
            else:
                self._flush_failing = False

    def _renew(self, held: list[tuple[str, str]]) -> None:
        try:
            self._jobs.renew_leases(held)
        except Exception:
            log.warning("Renewing %d leases failed; retrying.", len(held))


_running: RunningJobs | None = None


def running_jobs(services: Services) -> RunningJobs:
    """This process's running jobs (threads do not survive a fork)."""
    global _running
    if _running is None:
        _running = RunningJobs(services)
    return _running


class JobRunner:
    """Runs jobs for one worker process."""

    def __init__(
        self,
        services: Services,
        worker_name: str,
        enqueue: Enqueue,
        send_webhook: Callable[[str], None],
    ) -> None:
        self.services = services
        self.worker_name = worker_name
        self.enqueue = enqueue
        self.send_webhook = send_webhook

    def run(self, job_id: str, tenant: str | None = None) -> None:
        """Claim and run the job. ``tenant`` comes with the message (one
        lookup saved); a message without one has it looked up. A wrong
        tenant names no job, so its message does nothing."""
        jobs = self.services.jobs
        tenant = tenant or jobs.tenant_of(job_id)
        if tenant is None:
            log.warning("Job %s is unknown or expired; its message is dropped.", job_id)
            return

        with log_context(tenant=tenant, job=job_id):
            claim, job = jobs.claim(
                tenant,
                job_id,
                # A token per claim: only this claim may record or end the job.
                f"{self.worker_name}/{uuid.uuid4().hex[:8]}",
                max_running=self.services.settings.tenant_max_running,
            )
            if claim == "deferred":
                log.info("Job %s waits: its tenant runs its cap of jobs.", job_id)
            elif job is None:
                log.info("Job %s is %s; nothing to do.", job_id, claim)
            else:
                self._run_claimed(tenant, job_id, job)

    def _run_claimed(self, tenant: str, job_id: str, job: dict[str, Any]) -> None:
        # The request id ties the worker's lines to the API request that
        # submitted the job.
        with log_context(workflow=job["workflow"], request_id=job.get("request_id")):
            self._run_job(tenant, job_id, job)

    def _run_job(self, tenant: str, job_id: str, job: dict[str, Any]) -> None:
        log.info("Job %s started workflow %s.", job_id, job["workflow"])
        started = time.monotonic()
        metrics.job_started(job["workflow"], tenant)

        observer = JobObserver(self.services, tenant, job_id, owner=job["worker"])
        with running_jobs(self.services).holding(tenant, job_id, observer):
            status, fields = self._execute(job, observer)
        metrics.sync_cache_stats(self.services.cache)
        self._end(tenant, job_id, job, status, fields, started, observer.take_held())

    def _end(
        self,
        tenant: str,
        job_id: str,
        job: dict[str, Any],
        status: JobStatus,
        fields: dict[str, Any],
        started: float,
        node_events: tuple[int, list[str]],
    ) -> None:
        first_event, events = node_events

        def end_run() -> tuple[bool, list[str]]:
            return self.services.jobs.end_run(
                tenant,
                job_id,
                status,
                owner=job["worker"],
                fields=fields,
                node_events=events,
                first_event=first_event,
                release_cap=self.services.settings.tenant_max_running,
            )

        def failed(error: Exception) -> None:
            log.warning("Ending job %s failed (%s); trying again.", job_id, error)

        # The outcome is known: a Redis restarting for a few seconds must not
        # leave the job running until its lease lapses and it runs again.
        # Sending the end again is safe (job_scripts.FINISH).
        ended, released = END_RETRY.call_with_retry(end_run, failed)
        for deferred in released:
            self.enqueue(tenant, deferred)
        if ended:
            elapsed = time.monotonic() - started
            metrics.job_finished(job["workflow"], tenant, status.value, elapsed)
            log.info("Job %s ended %s.", job_id, status.value)
            if job.get("callback_url"):
                self.send_webhook(job_id)
        else:
            log.info("Job %s had already ended; its outcome is discarded.", job_id)
            release_deferred(self.services, tenant, self.enqueue)

    def _execute(
        self, job: dict[str, Any], observer: JobObserver
    ) -> tuple[JobStatus, dict[str, Any]]:
        """Run the workflow; every exception becomes the job's error here."""
        try:
            outcome = self._run_engine(job, observer)
        except PackageRepoError as error:
            log.warning("Job %s failed: %s", job["id"], error.message)
            # Raised before any node ran (or outside one): no node failed it.
            failure = {**error.to_dict(), "status": error.status, "node": None}
            return JobStatus.FAILED, {"error": failure, **observer.ended()}
        except Exception:
            log.exception("Job %s failed with an unexpected error.", job["id"])
            unexpected = {
                "code": "WORKFLOW_ERROR",
                "message": "The workflow failed.",
                "status": 500,
                "node": None,
            }
            return JobStatus.FAILED, {"error": unexpected, **observer.ended()}

        job_error = outcome.error
        if outcome.status == JobStatus.CANCELLED and job_error is None:
            job_error = CANCELLED
        fields = {
            "http_status": outcome.http_status,
            "result": outcome.result,
            "error": job_error,
            "nodes": outcome.nodes,
            "progress": outcome.progress,
        }
        return JobStatus(outcome.status), fields

    def _run_engine(self, job: dict[str, Any], observer: JobObserver) -> RunOutcome:
        from worker.engine import run_workflow
        from worker.nodes.base import Execution

        tenant, job_id = job["tenant"], job["id"]
        document, graph = self._workflow(job)
        execution = Execution(
            job_id=job_id,
            tenant=tenant,
            input=job["input"],
            user=job.get("submitted_by"),
        )
        return run_workflow(
            document,
            execution,
            registry=self.services.registry,
            services=self.services,
            observer=observer,
            is_cancelled=CancelCheck(self.services, tenant, job_id),
            graph=graph,
        )

    def _workflow(self, job: dict[str, Any]) -> tuple[dict[str, Any], WorkflowGraph]:
        """The validated document, from the cache by digest, else the file;
        and its graph, built once per cache entry."""
        tenant = job["tenant"]
        cached = self.services.cache.fetch(tenant, job["digest"])
        if cached is not None:
            graph = cached.derived.get("graph")
            if graph is None:
                graph = cached.derived["graph"] = WorkflowGraph.from_document(
                    cached.document
                )
            return cached.document, graph

        log.info("Workflow %s was not cached; loading its file.", job["workflow"])
        validated = self.services.cache.validated_file(
            self.services.catalog, tenant, job["workflow"]
        )
        validated.report.raise_for_errors()
        # The job was checked (scope, validity) against the document of its
        # digest; a file replaced since then is another workflow.
        if validated.digest != job["digest"]:
            raise WorkflowChanged(
                f"Workflow {job['workflow']} was changed after this job was "
                "submitted; submit it again."
            )
        return validated.document, WorkflowGraph.from_document(validated.document)


class ServerReport:
    """Runs the bundled ``server`` workflow and publishes its report.

    Each worker process runs it once at start-up (storage, Redis, registry,
    every bundled workflow validated into the cache) and keeps the report
    alive while the process lives, so ``/health/ready`` lists live workers
    only.
    """

    WORKFLOW = "server"
    TENANT = "default"

    def __init__(self, services: Services, worker_name: str) -> None:
        self.services = services
        self.worker_name = worker_name

    def publish(self) -> dict[str, Any]:
        from worker.engine import run_workflow
        from worker.nodes.base import Execution

        document, _source = self.services.catalog.read(self.TENANT, self.WORKFLOW)
        outcome = run_workflow(
            document,
            Execution(job_id=f"startup-{os.getpid()}", tenant=self.TENANT, input={}),
            registry=self.services.registry,
            services=self.services,
        )
        result = outcome.result if isinstance(outcome.result, dict) else {}
        report = {
            "worker": self.worker_name,
            "at": now_iso(),
            "ready": outcome.status == "succeeded" and bool(result.get("ready")),
            "report": result or outcome.error,
        }
        self.services.redis.set(
            keys.server_report(self.worker_name),
            json.dumps(report),
            ex=keys.SERVER_REPORT_TTL,
        )
        liveness.beat(
            self.services.redis,
            keys.live_reports(),
            self.worker_name,
            keys.SERVER_REPORT_TTL,
        )
        log.info("Worker %s is ready: %s.", self.worker_name, report["ready"])
        return report

    def withdraw(self) -> None:
        """Remove the report: this worker is stopping."""
        try:
            self.services.redis.delete(keys.server_report(self.worker_name))
            liveness.leave(self.services.redis, keys.live_reports(), self.worker_name)
        except Exception:
            log.warning(
                "The report of worker %s could not be withdrawn.", self.worker_name
            )

    def keep_alive(self) -> None:
        """Extend the report's life; called on every reaper pass."""
        self.services.redis.expire(
            keys.server_report(self.worker_name), keys.SERVER_REPORT_TTL
        )
        liveness.beat(
            self.services.redis,
            keys.live_reports(),
            self.worker_name,
            keys.SERVER_REPORT_TTL,
        )


class CancelCheck:
    """Asks Redis whether the job was cancelled, at most every 50 ms.

    The engine asks before every node; a chain of fast nodes would otherwise
    cost one round trip each. The first question waits 50 ms too: the job
    was claimed just now, and a cancel before the claim would have ended it.
    """

    INTERVAL_SECONDS = 0.05
    UNREACHABLE_PAUSE_SECONDS = 1.0
    """While Redis does not answer, ask again only this often (and say so
    once): the run goes on as not cancelled."""

    def __init__(self, services: Services, tenant: str, job_id: str) -> None:
        self._jobs = services.jobs
        self._tenant = tenant
        self._job_id = job_id
        self._checked_at = time.monotonic()
        self._cancelled = False
        self._unreachable = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._checked_at >= self.INTERVAL_SECONDS:
            self._checked_at = now
            try:
                self._cancelled = self._jobs.cancel_requested(
                    self._tenant, self._job_id
                )
                self._unreachable = False
            except (redis.ConnectionError, redis.TimeoutError):
                if not self._unreachable:
                    log.warning(
                        "Job %s cannot tell whether it was cancelled: Redis "
                        "does not answer. It goes on.",
                        self._job_id,
                    )
                self._unreachable = True
                self._checked_at = now + self.UNREACHABLE_PAUSE_SECONDS
        return self._cancelled


class JobObserver:
    """Keeps the job's node records and progress as the engine reports them,
    and writes them in batches.

    A node's event is held back for at most ``RunningJobs.FLUSH_SECONDS``:
    the process's ``RunningJobs`` thread writes what is held longer, and
    whatever is held when the run ends goes with the job's end, so a job of
    fast nodes costs one round trip for all of them, not one per node.
    """

    def __init__(
        self, services: Services, tenant: str, job_id: str, *, owner: str
    ) -> None:
        self._jobs = services.jobs
        self._tenant = tenant
        self._job_id = job_id
        self._owner = owner
        self._nodes: dict[str, dict[str, Any]] = {}
        self._progress: dict[str, int] = {"done": 0, "total": 0}
        self._held: list[str] = []
        self._held_since = 0.0
        self._written = 0
        """Node events handed to Redis so far; the next is number written + 1."""
        self._lock = threading.Lock()

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if kind not in ("progress", "node"):
            return
        with self._lock:
            if kind == "progress":
                self._progress = payload
                return
            self._nodes[payload["name"]] = payload
        if payload.get("status") == "running":
            return
        if log.isEnabledFor(logging.INFO):  # the context costs even a dropped line
            with log_context(node=payload["name"]):
                log.info("Node %s ended %s.", payload["name"], payload.get("status"))
        metrics.node_finished(payload)
        with self._lock:
            if not self._held:
                self._held_since = time.monotonic()
            self._held.append(event_json("node", payload))

    def flush(self, older_than: float) -> None:
        """Write the held node events if the oldest was held since before
        ``older_than`` (a ``time.monotonic()`` value).

        A write that fails keeps its events held, with their numbers: the
        next write sends them again, and Redis appends only those its log
        lacks (the failed write may have landed, its reply lost)."""
        with self._lock:
            if not self._held or self._held_since > older_than:
                return
            # Under the lock: the events reach Redis in the order they came.
            self._jobs.record_nodes(
                self._tenant,
                self._job_id,
                list(self._nodes.values()),
                self._progress,
                self._held,
                first=self._written + 1,
                owner=self._owner,
            )
            self._written += len(self._held)
            self._held = []

    def ended(self) -> dict[str, Any]:
        """The node log and progress of a run the engine did not end itself:
        a node it left ``running`` is recorded as ``failed``."""
        with self._lock:
            nodes = [
                {**record, "status": "failed"}
                if record.get("status") == "running"
                else record
                for record in self._nodes.values()
            ]
            return {"nodes": nodes, "progress": dict(self._progress)}

    def take_held(self) -> tuple[int, list[str]]:
        """The node events not written yet, for the job's end step, and the
        number of the first (as ``JobStore.record_nodes`` takes it)."""
        with self._lock:
            first, events = self._written + 1, self._held
            self._written += len(events)
            self._held = []
            return first, events


_runner: JobRunner | None = None


def current_runner(enqueue: Enqueue, send_webhook: Callable[[str], None]) -> JobRunner:
    """This process's runner, built on first use (after Celery forks)."""
    global _runner
    if _runner is None:
        name = f"{socket.gethostname()}:{os.getpid()}"
        services = Services(Settings.from_env())
        _runner = JobRunner(services, name, enqueue, send_webhook)
    return _runner
