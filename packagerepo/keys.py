"""Every Redis key this service writes, and how long each kind lives.

Keys read ``<prefix>:<tenant>:<kind>:<id>``. Keys that belong to no tenant
use ``-`` in the tenant position. Nothing else in the code base assembles a
key by hand; nothing this service writes lives without a TTL or a bound.
"""

from __future__ import annotations

import os

PREFIX = os.environ.get("REDIS_KEY_PREFIX", "pr")
GLOBAL = "-"

# TTLs in seconds, one per kind.
JOB_TTL = int(os.environ.get("JOB_TTL_SECONDS", str(7 * 24 * 3600)))
"""How long a job record lives after it ends."""
JOB_PENDING_TTL = 2 * 24 * 3600
"""Upper bound for a job that never ends (queued or running) before it expires."""
IDEMPOTENCY_TTL = 24 * 3600
WORKFLOW_CACHE_TTL = int(os.environ.get("WORKFLOW_CACHE_TTL_SECONDS", "3600"))
EVENT_LOG_TTL = JOB_TTL
ANONYMOUS_TENANT = "public"
"""Tenant of jobs run without a token (workflows whose scope is ``none``)."""
ANONYMOUS_JOB_TTL = 300
"""How long an anonymous job lives after it ends: its result (an
``auth_login`` token, say) is readable by whoever holds the job id."""


def ended_job_ttl(tenant: str) -> int:
    """How long a job of ``tenant`` and its events live after it ends."""
    return ANONYMOUS_JOB_TTL if tenant == ANONYMOUS_TENANT else JOB_TTL


SERVER_REPORT_TTL = 60
"""A worker's start-up report; its reaper renews it while the worker lives."""
JOB_INDEX_MAX = 10_000
"""Most recent job ids kept per tenant in the listing index."""


def _key(tenant: str, kind: str, ident: str = "") -> str:
    if ident:
        return f"{PREFIX}:{tenant}:{kind}:{ident}"
    return f"{PREFIX}:{tenant}:{kind}"


def job(tenant: str, job_id: str) -> str:
    """The job record (a JSON string)."""
    return _key(tenant, "job", job_id)


def job_tenant(job_id: str) -> str:
    """Which tenant owns a job id; lets a worker find the record from the id."""
    return _key(GLOBAL, "job-tenant", job_id)


def job_index(tenant: str) -> str:
    """Sorted set of the tenant's job ids, scored by submission time."""
    return _key(tenant, "jobs")


def job_events(tenant: str, job_id: str) -> str:
    """Pub/sub channel carrying a job's live events."""
    return _key(tenant, "events", job_id)


def job_event_log(tenant: str, job_id: str) -> str:
    """List of a job's events so far, replayed to late SSE subscribers."""
    return _key(tenant, "event-log", job_id)


def leased_jobs() -> str:
    """Sorted set of ``tenant/job`` members scored by lease expiry."""
    return _key(GLOBAL, "leases")


def sent_jobs() -> str:
    """Sorted set of ``tenant/job`` members whose message was sent but not yet
    seen by a worker, scored by when it was sent; the reapers' safety net for
    a message lost between the broker and a worker that died."""
    return _key(GLOBAL, "sent")


def ended_jobs() -> str:
    """Channel on which every job that ends is announced as ``tenant/job``:
    each API process follows it on one connection to wake its ``?wait``
    requests (``packagerepo.endings``)."""
    return _key(GLOBAL, "ended")


def running_jobs(tenant: str) -> str:
    """Set of the tenant's running job ids (the concurrency cap counts it)."""
    return _key(tenant, "running")


def deferred_jobs(tenant: str) -> str:
    """Sorted set of the tenant's jobs waiting for a running slot."""
    return _key(tenant, "deferred")


def deferred_tenants() -> str:
    """Set of tenants that have deferred jobs (the reaper's safety net)."""
    return _key(GLOBAL, "deferred-tenants")


def idempotency(tenant: str, key_digest: str) -> str:
    """Idempotency-Key record: the job id and the body digest."""
    return _key(tenant, "idempotency", key_digest)


def workflow_cache(tenant: str, cache_digest: str) -> str:
    """A validated workflow document in the second cache tier."""
    return _key(tenant, "workflow", cache_digest)


def server_report(worker_name: str) -> str:
    """The ``server`` start-up workflow's report from one worker."""
    return _key(GLOBAL, "server-report", worker_name)


WORKER_HEARTBEAT_TTL = 10
"""A worker's consumer heartbeat lives this long unless renewed (every 2 s)."""


def worker_heartbeat(worker: str) -> str:
    """Set by a worker's main (consuming) process while it takes messages."""
    return _key(GLOBAL, "worker-heartbeat", worker)


def rate_limit_prefix() -> str:
    """Prefix handed to the rate-limit library for its own counters."""
    return f"{PREFIX}-limits"


EXECUTE_QUEUE = "packagerepo"
"""The Celery queue of job executions."""
WEBHOOK_QUEUE = "packagerepo.webhooks"
"""The Celery queue of webhook deliveries, consumed by workers of their own
so a slow receiver never holds up a job."""


def celery_queue_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps a Celery queue's messages in (one per
    priority step; unprioritised messages sit in the first). Kombu names
    them, not this service; the metrics read their length."""
    return [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)]


def celery_unacked() -> tuple[str, str]:
    """The hash of messages kombu delivered but that are not acknowledged
    yet, and its index sorted by delivery time. Kombu names them (its Redis
    transport's defaults), not this service; the reaper reads them to find
    deliveries whose worker died before claiming the job."""
    return "unacked", "unacked_index"


UNUSABLE_MESSAGES_MAX = 1000
"""The set-aside list keeps this many of the latest entries."""


def unusable_messages() -> str:
    """List of the raw queue entries workers could not read as a message
    (not kombu's envelope, or a body that does not decode), set aside so the
    consumer goes on; the newest ``UNUSABLE_MESSAGES_MAX`` are kept."""
    return _key(GLOBAL, "unusable-messages")


UNUSABLE_MESSAGE_BYTES = 64 * 1024
"""A set-aside entry longer than this is kept cut to it."""


def live_consumers() -> str:
    """Sorted set of the workers whose consumer heartbeat is alive, scored
    by when it lapses (``packagerepo.liveness``)."""
    return _key(GLOBAL, "live-consumers")


def live_reports() -> str:
    """Sorted set of the worker processes whose ``server`` report is alive,
    scored by when it lapses (``packagerepo.liveness``)."""
    return _key(GLOBAL, "live-reports")
