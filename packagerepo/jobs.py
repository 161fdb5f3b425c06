"""Job records in Redis: creation, atomic state transitions, events.

A job is a Redis hash under ``keys.job(tenant, id)``; every field holds a JSON
value. State changes that must not race (claim, finish, cancel) run as small
Lua scripts, so a redelivered message, a reaper and a cancel request can
never move a job backwards or out of a terminal state. Each event is appended
to the job's event log and published on its channel in one script, with a
sequence number, so SSE clients can replay and then follow without gaps.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis
from redis.typing import EncodableT

from packagerepo import job_scripts, keys
from packagerepo.errors import NotFound
from packagerepo.idempotency import KeyMoved


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    CANCELLING = "cancelling"
    ALREADY_ENDED = "already_ended"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

CLAIMED_FIELDS = (
    "id",
    "tenant",
    "workflow",
    "digest",
    "input",
    "status",
    "attempts",
    "worker",
    "submitted_by",
    "callback_url",
    "request_id",
)
"""The fields a claim answers: what a worker needs to run the job."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encode(fields: dict[str, Any]) -> dict[EncodableT, str]:
    return {name: json.dumps(value) for name, value in fields.items()}


def _decode(raw: Mapping[Any, Any]) -> dict[str, Any]:
    return {_text(name): json.loads(value) for name, value in raw.items()}


def _decode_values(names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    """The named fields an HMGET answered, decoded (a missing one None)."""
    return {
        name: json.loads(value) if value is not None else None
        for name, value in zip(names, values, strict=True)
    }


def _text(value: object) -> str:
    """A member or value as Redis answered it (bytes: the client does not
    decode), as text; redis-py's types also allow str and other shapes."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"Redis answered a {type(value).__name__} where text was due.")


def _scored(batch: Iterable[Any]) -> list[tuple[str, float]]:
    """The (member, score) pairs a ``withscores=True`` range answers."""
    return [(_text(member), float(score)) for member, score in batch]


PUBLIC_FIELDS = (
    "id", "tenant", "workflow", "status", "created_at", "started_at",
    "finished_at", "attempts", "progress", "nodes", "result", "error",
    "submitted_by", "callback_url", "deliveries",
)  # fmt: skip
"""The fields of a job its clients see (API answers and webhooks); the rest
of the record is the service's own."""


ANSWERED_FIELDS = (*PUBLIC_FIELDS, "http_status")
"""What the API reads of a job to answer about it (``JobStore.public``)."""


def public_fields(job: dict[str, Any]) -> dict[str, Any]:
    """The job as its clients see it."""
    return {name: job.get(name) for name in PUBLIC_FIELDS}


def event_json(kind: str, payload: dict[str, Any]) -> str:
    """A job event as stored in its log and sent on its channel."""
    return json.dumps({"event": kind, "data": payload})


def new_job_id() -> str:
    return uuid.uuid4().hex


def lease_member(tenant: str, job_id: str) -> str:
    return f"{tenant}/{job_id}"


class JobStore:
    """Reads and changes job records for any tenant."""

    def __init__(self, client: redis.Redis, *, lease_seconds: int = 30) -> None:
        self.redis = client
        self.lease_seconds = lease_seconds
        self._create = client.register_script(job_scripts.CREATE)
        self._claim = client.register_script(job_scripts.CLAIM)
        self._finish = client.register_script(job_scripts.FINISH)
        self._requeue = client.register_script(job_scripts.REQUEUE)
        self._event = client.register_script(job_scripts.EVENT)
        self._record_nodes = client.register_script(job_scripts.RECORD_NODES)
        self._release = client.register_script(job_scripts.RELEASE)

    def create(
        self,
        *,
        tenant: str,
        workflow: str,
        digest: str,
        input: Any,
        submitted_by: str,
        callback_url: str | None = None,
        request_id: str | None = None,
        job_id: str | None = None,
        total_nodes: int = 0,
        timeout_seconds: float | None = None,
        message: tuple[str, str] | None = None,
        fence: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Store a new queued job and index it for the tenant.

        ``total_nodes`` is the workflow's node count, so a queued job's
        progress already says how far it has to go; ``timeout_seconds`` its
        execution timeout, after which the reaper fails it rather than
        running it again. ``message`` (a list and a payload) is pushed in
        the same step: the job's queue message, so the job and its message
        exist together or not at all. Creating a job that exists changes
        nothing (see ``job_scripts.CREATE``). With ``fence`` (an
        Idempotency-Key and the record it must hold,
        ``packagerepo.idempotency``) the job is created only while the key
        names it, else KeyMoved.
        """
        job_id = job_id or new_job_id()
        job = {
            "id": job_id,
            "tenant": tenant,
            "workflow": workflow,
            "digest": digest,
            "status": JobStatus.QUEUED.value,
            "created_at": now_iso(),
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "input": input,
            "result": None,
            "error": None,
            "progress": {"done": 0, "total": total_nodes},
            "nodes": [],
            "submitted_by": submitted_by,
            "callback_url": callback_url,
            "deliveries": [],
            "cancel_requested": False,
            "worker": None,
            "request_id": request_id,
            "timeout_seconds": timeout_seconds,
        }
        pairs: list[EncodableT] = []
        for name, value in _encode(job).items():
            pairs += [name, value]
        queue, payload = message if message is not None else ("", "")
        fence_key, fence_record = fence if fence is not None else ("", "")
        created = self._create(
            keys=[
                keys.job(tenant, job_id),
                keys.job_tenant(job_id),
                keys.job_index(tenant),
                keys.sent_jobs(),
                queue,
                fence_key,
            ],
            args=[
                keys.JOB_PENDING_TTL,
                tenant,
                job_id,
                time.time(),
                lease_member(tenant, job_id),
                keys.JOB_INDEX_MAX,
                keys.JOB_TTL,
                payload,
                fence_record,
                *pairs,
            ],
        )
        if created == -1:
            raise KeyMoved(f"The Idempotency-Key names another job than {job_id}.")
        return job

    def tenant_of(self, job_id: str) -> str | None:
        """The tenant owning ``job_id``, or None when it is unknown."""
        tenant = self.redis.get(keys.job_tenant(job_id))
        return _text(tenant) if tenant else None

    def get(self, tenant: str, job_id: str) -> dict[str, Any]:
        """The job, or NotFound (also for another tenant's job id)."""
        raw = self.redis.hgetall(keys.job(tenant, job_id))
        if not raw:
            raise NotFound(f"Job {job_id} was not found.")
        return _decode(raw)

    def public(self, tenant: str, job_id: str) -> dict[str, Any]:
        """What a client is answered about the job (``PUBLIC_FIELDS`` and
        the run's HTTP status), or NotFound: one ``HMGET``, which leaves its
        input (a publish carries the whole artifact) in Redis."""
        found = self.fields(tenant, job_id, *ANSWERED_FIELDS)
        if found["status"] is None:
            raise NotFound(f"Job {job_id} was not found.")
        return found

    def field(self, tenant: str, job_id: str, name: str) -> Any:
        raw = self.redis.hget(keys.job(tenant, job_id), name)
        return json.loads(raw) if raw is not None else None

    def fields(self, tenant: str, job_id: str, *names: str) -> dict[str, Any]:
        """Several fields of the job in one round trip (missing ones None)."""
        return _decode_values(names, self.redis.hmget(keys.job(tenant, job_id), names))

    def status(self, tenant: str, job_id: str) -> JobStatus | None:
        value = self.field(tenant, job_id, "status")
        return JobStatus(value) if value else None

    def claim(
        self,
        tenant: str,
        job_id: str,
        worker: str,
        *,
        max_running: int = 1_000_000,
    ) -> tuple[str, dict[str, Any] | None]:
        """Move a queued job to running under this worker's lease.

        Answers ``("claimed", job)`` with CLAIMED_FIELDS of the job as it now is
        (its ``running`` event already sent), ``("deferred", None)`` when the
        tenant runs ``max_running`` jobs already (the job waits in its
        deferred set, see ``release_deferred``), or the status that made the
        job unclaimable.
        """
        outcome = self._claim(
            keys=[
                keys.job(tenant, job_id),
                keys.leased_jobs(),
                keys.running_jobs(tenant),
                keys.deferred_jobs(tenant),
                keys.deferred_tenants(),
                keys.job_event_log(tenant, job_id),
                keys.job_events(tenant, job_id),
                keys.sent_jobs(),
            ],
            args=[
                json.dumps(now_iso()),
                json.dumps(worker),
                time.time() + self.lease_seconds,
                lease_member(tenant, job_id),
                job_id,
                keys.JOB_PENDING_TTL,
                max_running,
                time.time(),
                tenant,
                event_json("status", {"status": JobStatus.RUNNING.value}),
                keys.EVENT_LOG_TTL,
                *CLAIMED_FIELDS,
            ],
        )
        if isinstance(outcome, list):
            return "claimed", _decode_values(CLAIMED_FIELDS, outcome[1:])
        return (outcome.decode() if outcome else "missing"), None

    def release_deferred(self, tenant: str, max_running: int) -> list[str]:
        """Deferred jobs of ``tenant`` that now fit under its cap, oldest first.

        The caller sends their messages again; a job that meanwhile ended
        (cancelled) is ignored by the worker that receives it.
        """
        ids = self._release(
            keys=[
                keys.running_jobs(tenant),
                keys.deferred_jobs(tenant),
                keys.deferred_tenants(),
                keys.sent_jobs(),
            ],
            args=[max_running, tenant, time.time()],
        )
        return [job_id.decode() for job_id in ids]

    def tenants_with_deferred_jobs(self) -> list[str]:
        return [
            _text(tenant) for tenant in self.redis.smembers(keys.deferred_tenants())
        ]

    def renew_leases(self, held: list[tuple[str, str]]) -> None:
        """Push the expiry of these (tenant, job id) leases forward, in one
        round trip; a lease that was reaped meanwhile is not revived."""
        expiry = time.time() + self.lease_seconds
        members: dict[str, float] = {
            lease_member(tenant, job_id): expiry for tenant, job_id in held
        }
        self.redis.zadd(keys.leased_jobs(), members, xx=True)

    def record_nodes(
        self,
        tenant: str,
        job_id: str,
        nodes: list[dict[str, Any]],
        progress: dict[str, int],
        events: Sequence[str],
        *,
        first: int,
        owner: str,
    ) -> bool:
        """Store the node log and progress and send the ``node`` events
        (``event_json("node", record)`` each), in one round trip; False (and
        nothing written) when ``owner`` no longer holds the job.

        ``first`` is the number of the first event within the claim
        (counting from 1): an event the job's log already holds, because
        this write is sent again, is not appended twice."""
        written = self._record_nodes(
            keys=[
                keys.job(tenant, job_id),
                keys.job_event_log(tenant, job_id),
                keys.job_events(tenant, job_id),
            ],
            args=[
                json.dumps(nodes),
                json.dumps(progress),
                keys.EVENT_LOG_TTL,
                json.dumps(owner),
                first,
                *events,
            ],
        )
        return bool(written)

    def finish(
        self,
        tenant: str,
        job_id: str,
        status: JobStatus,
        *,
        owner: str | None = None,
        **fields: Any,
    ) -> bool:
        """Move a queued or running job to a terminal state; False if it ended.

        The ``done`` event is sent in the same step. With ``owner`` (the
        claim token the runner got), only that claim may end the job.
        """
        return self.end_run(tenant, job_id, status, owner=owner, fields=fields)[0]

    def end_run(
        self,
        tenant: str,
        job_id: str,
        status: JobStatus,
        *,
        owner: str | None,
        fields: dict[str, Any],
        node_events: Sequence[str] = (),
        first_event: int = 1,
        release_cap: int | None = None,
    ) -> tuple[bool, list[str]]:
        """``finish``, also sending the ``node`` events the runner still held
        (numbered from ``first_event``, as ``record_nodes``) before ``done``
        and, with ``release_cap``, releasing the tenant's deferred jobs that
        now fit (as ``release_deferred``), all in one step. Answers whether
        it ended the job, and the released job ids."""
        fields = {"status": status.value, "finished_at": now_iso(), **fields}
        pairs: list[EncodableT] = []
        for name, value in _encode(fields).items():
            pairs += [name, value]
        outcome = self._finish(
            keys=[
                keys.job(tenant, job_id),
                keys.leased_jobs(),
                keys.running_jobs(tenant),
                keys.job_tenant(job_id),
                keys.job_event_log(tenant, job_id),
                keys.job_events(tenant, job_id),
                keys.deferred_jobs(tenant),
                keys.deferred_tenants(),
                keys.sent_jobs(),
                keys.ended_jobs(),
            ],
            args=[
                keys.ended_job_ttl(tenant),
                lease_member(tenant, job_id),
                event_json("done", {"status": status.value}),
                keys.ended_job_ttl(tenant),
                json.dumps(owner) if owner is not None else "",
                "" if release_cap is None else release_cap,
                time.time(),
                len(node_events),
                first_event,
                *node_events,
                *pairs,
            ],
        )
        if isinstance(outcome, list):
            return True, [_text(job_id) for job_id in outcome[1:]]
        return False, []

    def requeue(self, tenant: str, job_id: str) -> bool:
        """Put a running job whose lease lapsed back to queued."""
        outcome = self._requeue(
            keys=[
                keys.job(tenant, job_id),
                keys.leased_jobs(),
                keys.running_jobs(tenant),
                keys.sent_jobs(),
            ],
            args=[lease_member(tenant, job_id), time.time()],
        )
        return bool(outcome == b"requeued")

    def request_cancel(self, tenant: str, job_id: str) -> CancelOutcome:
        """Cancel a queued job now, or flag a running one to stop.

        ``CANCELLED`` means this call ended it (it will never run),
        ``CANCELLING`` that it stops between nodes, ``ALREADY_ENDED`` that
        it had ended before (this call changed nothing).
        """
        status = self.status(tenant, job_id)
        if status is None:
            raise NotFound(f"Job {job_id} was not found.")
        if status.terminal:
            return CancelOutcome.ALREADY_ENDED

        self.redis.hset(keys.job(tenant, job_id), "cancel_requested", "true")
        if status is JobStatus.QUEUED and self.finish(
            tenant,
            job_id,
            JobStatus.CANCELLED,
            error={
                "code": "CANCELLED",
                "message": "The job was cancelled.",
                "status": 409,
            },
        ):
            return CancelOutcome.CANCELLED
        if self.status(tenant, job_id) is JobStatus.RUNNING:
            return CancelOutcome.CANCELLING
        return CancelOutcome.ALREADY_ENDED

    def record_delivery(self, tenant: str, job_id: str, attempt: dict[str, Any]) -> int:
        """Append a webhook delivery attempt; returns how many there are.

        An optimistic transaction: two deliveries recorded at once (a retry
        and a cancel's delivery) both land.
        """
        key = keys.job(tenant, job_id)
        count = 0

        def append(pipe: Any) -> None:
            nonlocal count
            raw = pipe.hget(key, "deliveries")
            deliveries = json.loads(raw) if raw else []
            deliveries.append(attempt)
            count = len(deliveries)
            pipe.multi()
            # Only on an existing record: HSET keeps its TTL, and a job that
            # expired stays gone.
            if raw is not None:
                pipe.hset(key, "deliveries", json.dumps(deliveries))

        self.redis.transaction(append, key)
        return count

    def cancel_requested(self, tenant: str, job_id: str) -> bool:
        return bool(self.field(tenant, job_id, "cancel_requested"))

    def unseen_messages(
        self, older_than: float, limit: int = 100
    ) -> list[tuple[str, str]]:
        """(tenant, job id) of jobs whose message was sent before ``older_than``
        (a Unix time) and no worker has seen since."""
        members = self.redis.zrangebyscore(
            keys.sent_jobs(), 0, older_than, start=0, num=limit
        )
        pairs = []
        for member in members:
            tenant, _, job_id = _text(member).partition("/")
            pairs.append((tenant, job_id))
        return pairs

    def mark_sent(self, tenant: str, job_id: str) -> None:
        """Note that a message for the job was sent (again) just now."""
        self.redis.zadd(keys.sent_jobs(), {lease_member(tenant, job_id): time.time()})

    def forget_sent(self, tenant: str, job_id: str) -> None:
        self.redis.zrem(keys.sent_jobs(), lease_member(tenant, job_id))

    def expired_leases(self, limit: int = 100) -> list[tuple[str, str]]:
        """(tenant, job id) pairs whose lease has lapsed."""
        members = self.redis.zrangebyscore(
            keys.leased_jobs(), 0, time.time(), start=0, num=limit
        )
        pairs = []
        for member in members:
            tenant, _, job_id = _text(member).partition("/")
            pairs.append((tenant, job_id))
        return pairs

    def publish(
        self, tenant: str, job_id: str, kind: str, payload: dict[str, Any]
    ) -> int:
        """Append an event to the job's log and publish it; returns its seq."""
        event = event_json(kind, payload)
        seq = self._event(
            keys=[keys.job_event_log(tenant, job_id), keys.job_events(tenant, job_id)],
            args=[event, keys.EVENT_LOG_TTL],
        )
        return int(seq)

    def events_since(
        self, tenant: str, job_id: str, seq: int = 0
    ) -> list[tuple[int, dict[str, Any]]]:
        """Events with a sequence number above ``seq``, oldest first."""
        raw = self.redis.lrange(keys.job_event_log(tenant, job_id), seq, -1)
        return [(seq + i + 1, json.loads(item)) for i, item in enumerate(raw)]

    def event_count(self, tenant: str, job_id: str) -> int:
        """How many events the job's log holds: the last sequence number."""
        count: int = self.redis.llen(keys.job_event_log(tenant, job_id))
        return count

    def list(
        self,
        tenant: str,
        *,
        status: str | None = None,
        workflow: str | None = None,
        cursor: float | None = None,
        limit: int = 20,
    ) -> tuple[list[dict[str, Any]], float | None]:
        """The tenant's jobs newest first, filtered, and the next cursor."""
        upper = f"({cursor}" if cursor is not None else "+inf"
        found: list[dict[str, Any]] = []
        next_cursor: float | None = None
        while len(found) < limit:
            batch = self.redis.zrevrangebyscore(
                keys.job_index(tenant),
                upper,
                "-inf",
                start=0,
                num=limit * 2,
                withscores=True,
            )
            if not batch:
                next_cursor = None
                break
            for job_id, score in _scored(batch):
                upper = f"({score}"
                job = self._summary(tenant, job_id)
                if job and _matches(job, status, workflow):
                    found.append(job)
                    next_cursor = score
                    if len(found) == limit:
                        break
        return found, next_cursor if len(found) == limit else None

    def _summary(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        names = ["id", "workflow", "status", "created_at", "finished_at", "progress"]
        values = self.redis.hmget(keys.job(tenant, job_id), names)
        if values[0] is None:
            return None
        return {n: json.loads(v) for n, v in zip(names, values, strict=True) if v}


def _matches(job: dict[str, Any], status: str | None, workflow: str | None) -> bool:
    if status and job.get("status") != status:
        return False
    return not (workflow and job.get("workflow") != workflow)
