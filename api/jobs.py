"""Executing workflows and following their jobs: submit, poll, list,
cancel, and server-sent events."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    request,
    stream_with_context,
)

from api import celery, services
from api.auth import check_scope, client_address, require_scope, resolve_identity
from api.requests import json_body
from loader.cache import CachedWorkflow
from loader.limits import execution_timeout
from packagerepo import keys, metrics, webhooks
from packagerepo.accounts import Identity
from packagerepo.endings import Waiter
from packagerepo.errors import (
    InvalidRequest,
    NotFound,
    PackageRepoError,
    QueueUnavailable,
)
from packagerepo.idempotency import Binding, KeyMoved
from packagerepo.jobs import (
    CancelOutcome,
    JobStatus,
    JobStore,
    new_job_id,
    public_fields,
)
from packagerepo.logs import log_context
from worker.celery_app import execute_message, send_webhook

log = logging.getLogger(__name__)

jobs_bp = Blueprint("jobs", __name__)

ANONYMOUS_TENANT = keys.ANONYMOUS_TENANT
REDIS_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)
WAIT_SYNTAX = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?", re.ASCII)
LIMIT_SYNTAX = re.compile(r"[0-9]{1,3}", re.ASCII)
CURSOR_SYNTAX = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?(e[+-]?[0-9]{1,3})?", re.ASCII)
"""What ``next_cursor`` looks like: ``repr`` of a non-negative float."""
SSE_HEARTBEAT_SECONDS = 15.0
SSE_CLIENT_CHECK_SECONDS = 1.0
"""How often a quiet stream looks whether its client has left: a stream
holds one of the process's SSE_MAX_STREAMS slots, and writing the next
heartbeat is the only other way to find out."""


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """The job as clients see it, with links."""
    view = public_fields(job)
    base = f"/v1/jobs/{job['id']}"
    view["links"] = {
        "self": base,
        "events": f"{base}/events",
        "cancel": f"{base}/cancel",
    }
    return view


def _wait_seconds() -> float:
    raw = request.args.get("wait")
    if raw is None:
        return 0.0
    limit = services().settings.max_wait_seconds
    # float() alone would also take "1_0" and other scripts' digits.
    if not WAIT_SYNTAX.fullmatch(raw) or float(raw) > limit:
        raise InvalidRequest(f"wait must be between 0 and {limit} seconds.")
    return float(raw)


@jobs_bp.post("/v1/workflows/<name>/execute")
def execute(name: str) -> Response:
    state = services()
    identity = resolve_identity(required=False)
    tenant = identity.tenant if identity else ANONYMOUS_TENANT
    wait = _wait_seconds()
    workflow_input = json_body(default={})

    validated = state.cache.validated_file(state.catalog, tenant, name)
    check_scope(identity, _required_scope(validated.document))
    if identity is None:
        # Anonymous callers share a tenant, not a budget: each address has
        # its own, so one client cannot lock everyone out of auth_login.
        rate = state.settings.anonymous_submit_rate
        state.rate_limits.hit(rate, "submit-anonymous", client_address())
    else:
        state.rate_limits.hit(state.settings.tenant_submit_rate, "submit", tenant)
    callback_url = _callback_url()
    validated.report.raise_for_errors()

    job_id = new_job_id()
    binding = _binding(tenant, name, workflow_input)
    try:
        existing = _bound_job(binding, job_id) if binding else None
        if existing is None:
            new = _NewJob(tenant, name, job_id, validated, workflow_input)
            return _run_new(new, identity, callback_url, wait, binding)
    except KeyMoved:
        # Another request took the key over while this one was creating its
        # job, which was therefore not created: answer with that request's.
        existing = _bound_job(binding, job_id) if binding else None
        if existing is None:
            raise QueueUnavailable("The job for this Idempotency-Key is not ready.")
    # A replay answers like the first request would have: with ?wait, the
    # result once the job ends.
    ended = _await_end(tenant, existing["id"], wait) if wait > 0 else None
    if ended is None:
        return _accepted(_current(existing), status=200)
    return _finished_response(ended)


@dataclass(frozen=True)
class _NewJob:
    tenant: str
    workflow: str
    job_id: str
    validated: CachedWorkflow
    input: Any


def _run_new(
    new: _NewJob,
    identity: Identity | None,
    callback_url: str | None,
    wait: float,
    binding: Binding | None,
) -> Response:
    """Create the job; with ``wait``, answer once it ends or the wait runs out."""
    if wait <= 0:
        return _accepted(_submit(new, identity, callback_url, binding), status=202)
    # The waiter is registered before the job exists, so its end cannot
    # slip by unheard.
    with services().ended_jobs.waiting(new.tenant, new.job_id) as (waiter, listening):
        job = _submit(new, identity, callback_url, binding)
        ended = _wait_for_end(new.tenant, new.job_id, wait, waiter, look=not listening)
    if ended is None:
        # The wait ran out: the job as it is now (running, most likely), not
        # as it was submitted.
        return _accepted(_current(job), status=202)
    return _finished_response(ended)


def _current(job: dict[str, Any]) -> dict[str, Any]:
    """The job as it is now, or as given when Redis cannot tell."""
    with contextlib.suppress(NotFound, *REDIS_UNREACHABLE):
        return services().looks.public(job["tenant"], job["id"])
    return job


def _submit(
    new: _NewJob,
    identity: Identity | None,
    callback_url: str | None,
    binding: Binding | None,
) -> dict[str, Any]:
    """Create the queued job together with its message; KeyMoved when the
    Idempotency-Key names another job by now."""
    tenant, job_id = new.tenant, new.job_id
    timeout_seconds = execution_timeout(new.validated.document)
    try:
        job = services().jobs.create(
            tenant=tenant,
            workflow=new.workflow,
            digest=new.validated.digest,
            input=new.input,
            submitted_by=identity.username if identity else "anonymous",
            callback_url=callback_url,
            request_id=g.get("request_id"),
            job_id=job_id,
            total_nodes=len(new.validated.document["nodes"]),
            timeout_seconds=timeout_seconds,
            message=execute_message(celery(), job_id, timeout_seconds, tenant=tenant),
            fence=binding.fence(job_id) if binding else None,
        )
    except redis.RedisError:
        written = _written_anyway(tenant, job_id, binding)
        if written is None:
            raise
        job = written
    with log_context(tenant=tenant, job=job_id, workflow=new.workflow):
        log.info("Job %s was submitted for workflow %s.", job_id, new.workflow)
    metrics.job_submitted(new.workflow, tenant)
    return job


def _accepted(job: dict[str, Any], *, status: int) -> Response:
    response = jsonify({"ok": True, "job": job_view(job)})
    response.status_code = status
    response.headers["Location"] = f"/v1/jobs/{job['id']}"
    return response


def _written_anyway(
    tenant: str, job_id: str, binding: Binding | None
) -> dict[str, Any] | None:
    """After a create that failed: the job if it was written all the same
    (only its reply was lost), else None. The Idempotency-Key is released
    only once the job is known not to exist; when Redis cannot say, the key
    stays and a retry finds out (``_bound_job``)."""
    state = services()
    try:
        return state.jobs.get(tenant, job_id)
    except NotFound:
        if binding is not None:
            with contextlib.suppress(redis.RedisError):
                state.idempotency.release(binding, job_id)
    except redis.RedisError:
        pass
    return None


def _created_job(tenant: str, job_id: str) -> dict[str, Any] | None:
    """A job another request may be creating right now, once it exists;
    None when it still does not after a second."""
    for _ in range(20):
        with contextlib.suppress(NotFound):
            return services().jobs.get(tenant, job_id)
        time.sleep(0.05)
    return None


def _callback_url() -> str | None:
    url = request.headers.get("X-Callback-Url")
    if url is None:
        return None
    return webhooks.check_destination(url, services().settings).url


def _binding(tenant: str, workflow: str, workflow_input: Any) -> Binding | None:
    """The request's Idempotency-Key with the digest of what it asks for."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters.")
    canonical = json.dumps([workflow, workflow_input], sort_keys=True)
    return Binding(tenant, key, hashlib.sha256(canonical.encode()).hexdigest())


def _bound_job(binding: Binding, job_id: str) -> dict[str, Any] | None:
    """The job an earlier request with the same Idempotency-Key created, or
    None when this request is to create ``job_id`` (the key names it now).

    A key naming a job that does not exist after a second (its request
    failed, or is slow) moves to ``job_id``, but only if that job still does
    not exist: ``packagerepo.idempotency`` keeps it to one job per key.
    """
    keys_ = services().idempotency
    bound = keys_.reserve(binding, job_id)
    for _ in range(2):
        if bound is None or bound == job_id:
            return None
        existing = _created_job(binding.tenant, bound)
        if existing is not None:
            return existing
        bound = keys_.take_over(binding, bound, job_id)
    raise QueueUnavailable("The job for this Idempotency-Key is not ready.")


def _required_scope(document: dict[str, Any]) -> str:
    settings = document.get("settings")
    scope = settings.get("scope") if isinstance(settings, dict) else None
    return scope if scope in {"none", "read", "write", "admin"} else "read"


def _await_end(tenant: str, job_id: str, timeout: float) -> dict[str, Any] | None:
    """The job once it ended, or None after ``timeout`` (an existing job)."""
    with services().ended_jobs.waiting(tenant, job_id) as (waiter, _listening):
        return _wait_for_end(tenant, job_id, timeout, waiter, look=True)


def _wait_for_end(
    tenant: str, job_id: str, timeout: float, waiter: Waiter, *, look: bool
) -> dict[str, Any] | None:
    """The job once it ended, or None when ``timeout`` passes first (or the
    job is gone). ``look`` checks it before the first wait: needed unless the
    waiter was registered, and listening, before the job could end.

    A look reads the job's status alone unless its end was announced, so
    waiting on a job with a large input costs little; a Redis that does not
    answer for a moment is waited out, not turned into an error. Looks go
    through ``Services.looks``, whose reads give up after about a second:
    a Redis that stops answering costs the wait that much past its
    deadline, not many seconds.
    """
    jobs = services().looks
    deadline = time.monotonic() + timeout
    heard = False
    while True:
        if look or heard:
            try:
                ended = _if_ended(jobs, tenant, job_id, heard=heard)
            except NotFound:
                return None
            except REDIS_UNREACHABLE:
                ended = None
            if ended is not None:
                return ended
        look = True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        heard = waiter.wait(remaining)


def _if_ended(
    jobs: JobStore, tenant: str, job_id: str, *, heard: bool
) -> dict[str, Any] | None:
    """The job as answered about if it has ended; NotFound when it is gone."""
    if not heard:
        status = jobs.status(tenant, job_id)
        if status is None:
            raise NotFound(f"Job {job_id} was not found.")
        if not status.terminal:
            return None
    job = jobs.public(tenant, job_id)
    return job if JobStatus(job["status"]).terminal else None


def _finished_response(job: dict[str, Any]) -> Response:
    if job["status"] == JobStatus.SUCCEEDED:
        response = jsonify({"ok": True, "result": job["result"], "job": job_view(job)})
        # A respond.json node may answer 201 or a redirect; the run's status
        # is the waiting request's status.
        response.status_code = job.get("http_status") or 200
        return response

    error = job.get("error") or {"code": "WORKFLOW_ERROR", "message": "Failed."}
    declared = error.get("status")
    status = declared if isinstance(declared, int) else 500
    if job["status"] == JobStatus.CANCELLED:
        status = 409
    response = jsonify({"ok": False, "error": error, "job": job_view(job)})
    response.status_code = status
    return response


def _caller_tenant() -> str:
    """The tenant whose jobs the caller may read."""
    identity = resolve_identity(required=False)
    if identity is None:
        return ANONYMOUS_TENANT
    check_scope(identity, "read")
    return identity.tenant


@jobs_bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    """The job; with ``?wait=N`` a long poll that answers once it has ended
    or N seconds have passed, whichever comes first."""
    tenant, job_id = _caller_tenant(), _checked_id(job_id)
    wait = _wait_seconds()
    job = services().jobs.public(tenant, job_id)
    if wait > 0 and not JobStatus(job["status"]).terminal:
        job = _await_end(tenant, job_id, wait) or services().looks.public(
            tenant, job_id
        )
    return jsonify({"ok": True, "job": job_view(job)})


@jobs_bp.get("/v1/jobs")
@require_scope("read")
def list_jobs() -> Response:
    status = request.args.get("status")
    if status is not None and status not in {s.value for s in JobStatus}:
        raise InvalidRequest("status must be one of the job states.")
    raw_limit = request.args.get("limit", "20")
    cursor = request.args.get("cursor")
    # int() and float() also take other scripts' digits, signs and blanks.
    if not LIMIT_SYNTAX.fullmatch(raw_limit):
        raise InvalidRequest("limit must be a number from 1 to 100.")
    if cursor and not CURSOR_SYNTAX.fullmatch(cursor):
        raise InvalidRequest("cursor must be a cursor this API returned.")
    limit = int(raw_limit)
    cursor_score = float(cursor) if cursor else None
    if cursor_score is not None and not math.isfinite(cursor_score):
        raise InvalidRequest("cursor must be a cursor this API returned.")
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be between 1 and 100.")

    found, next_cursor = services().jobs.list(
        g.identity.tenant,
        status=status,
        workflow=request.args.get("workflow"),
        cursor=cursor_score,
        limit=limit,
    )
    return jsonify(
        {
            "ok": True,
            "jobs": found,
            "next_cursor": repr(next_cursor) if next_cursor is not None else None,
        }
    )


@jobs_bp.post("/v1/jobs/<job_id>/cancel")
@require_scope("write")
def cancel_job(job_id: str) -> Response:
    tenant = g.identity.tenant
    outcome = services().jobs.request_cancel(tenant, _checked_id(job_id))
    job = services().jobs.public(tenant, job_id)
    if outcome is CancelOutcome.ALREADY_ENDED:
        raise PackageRepoError(
            f"Job {job_id} has already ended {job['status']}.",
            code="JOB_ALREADY_ENDED",
            status=409,
        )
    if outcome is CancelOutcome.CANCELLED and job.get("callback_url"):
        send_webhook(celery(), job_id)
    return jsonify({"ok": True, "outcome": outcome, "job": job_view(job)})


@jobs_bp.get("/v1/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    tenant = _caller_tenant()
    job_id = _checked_id(job_id)
    services().jobs.public(tenant, job_id)  # 404 before the stream starts
    last_seen = _last_event_id()
    if last_seen:
        # An id past the log's end was never sent: resume from the end, so
        # what comes next (done at the latest) still reaches the client.
        last_seen = min(last_seen, services().jobs.event_count(tenant, job_id))

    # Each open stream holds one of this process's threads; past the cap a
    # client is told to come back, so streams never take every thread.
    slots = _stream_slots()
    if not slots.acquire(blocking=False):
        raise PackageRepoError(
            "Too many event streams are open; retry shortly or poll with ?wait.",
            code="STREAM_LIMIT",
            status=503,
        )
    pubsub = services().redis.pubsub(ignore_subscribe_messages=True)
    try:
        # Subscribed before the stream starts: a Redis that does not answer
        # is a 503 envelope here, not a broken stream.
        pubsub.subscribe(keys.job_events(tenant, job_id))
    except BaseException:
        pubsub.close()
        slots.release()
        raise
    client = _ClientSocket(request.environ.get("gunicorn.socket"))
    stream = stream_with_context(
        _event_stream(tenant, job_id, last_seen, pubsub, client)
    )
    response = Response(stream, mimetype="text/event-stream")
    response.call_on_close(slots.release)
    response.call_on_close(pubsub.close)  # also when the stream never started
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _stream_slots() -> threading.BoundedSemaphore:
    slots = current_app.extensions.get("sse_slots")
    if slots is None:
        slots = threading.BoundedSemaphore(services().settings.sse_max_streams)
        current_app.extensions["sse_slots"] = slots
    return slots


def _last_event_id() -> int:
    """The SSE resume point; anything but a small non-negative integer is 0."""
    raw = request.headers.get("Last-Event-ID", "0")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        return 0
    return int(raw)


class _ClientSocket:
    """The stream's client connection, as far as it can be watched.

    Gunicorn hands the socket over in the environ; a plain TCP socket is
    peeked at without blocking (TLS sockets and other servers are not
    watched: their streams find a gone client at the next heartbeat).
    """

    def __init__(self, connection: Any) -> None:
        self._socket = connection if type(connection) is socket.socket else None

    def gone(self) -> bool:
        """Whether the client closed its end (a peek reads end-of-file).

        Never waits: the socket carries gunicorn's read timeout, which a
        plain ``recv`` would sit out before peeking."""
        if self._socket is None:
            return False
        try:
            # poll, not select: a busy process's descriptors pass 1024.
            poller = select.poll()
            poller.register(self._socket, select.POLLIN)
            if not poller.poll(0):
                return False  # open, nothing sent: the usual case
            peeked = self._socket.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ValueError):
            return True  # reset, or closed under us
        return peeked == b""


def _next_message(pubsub: Any, client: _ClientSocket) -> dict[str, Any] | None:
    """The channel's next message, or None after a heartbeat of quiet;
    ``_ClientGone`` as soon as a check finds the client has left."""
    quiet_until = time.monotonic() + SSE_HEARTBEAT_SECONDS
    while True:
        left = quiet_until - time.monotonic()
        if left <= 0:
            return None
        message: dict[str, Any] | None = pubsub.get_message(
            timeout=min(left, SSE_CLIENT_CHECK_SECONDS)
        )
        if message is not None:
            return message
        if client.gone():
            raise _ClientGone


class _ClientGone(Exception):
    """The stream's client closed its connection."""


def _event_stream(
    tenant: str, job_id: str, last_seen: int, pubsub: Any, client: _ClientSocket
) -> Iterator[str]:
    """Replay the job's events after ``last_seen``, then follow until done.

    The log is the truth and the channel only the news: whatever the stream
    did not hear (a subscription that dropped and came back, as redis-py
    does by itself) it reads from the log, when an event arrives out of
    turn or the channel has been quiet for a heartbeat. A stream resumed
    past the log of a job that has ended closes at once: the client has
    seen its ``done``. A subscription that fails for good ends the stream
    cleanly; the client resumes with ``Last-Event-ID``.
    """
    state = services()
    try:
        ends_at = time.monotonic() + state.settings.sse_max_seconds
        message = None
        while True:
            if message is None or _seq(message) != last_seen + 1:
                for seq, event in state.jobs.events_since(tenant, job_id, last_seen):
                    last_seen = seq
                    yield _sse(seq, event)
                    if event["event"] == "done":
                        return
                if message is None:
                    status = state.jobs.status(tenant, job_id)
                    if status is None:
                        # The job expired with its log: nothing more will come.
                        done = {"event": "done", "data": {"status": None}}
                        yield _sse(last_seen + 1, done)
                        return
                    if status.terminal:
                        return
            else:
                last_seen, event = _seq(message), _event(message)
                yield _sse(last_seen, event)
                if event["event"] == "done":
                    return
            # A stream ends after SSE_MAX_SECONDS even if the job has not:
            # the client reconnects with Last-Event-ID, freeing the thread.
            if time.monotonic() >= ends_at:
                return
            try:
                message = _next_message(pubsub, client)
            except REDIS_UNREACHABLE:
                return
            if message is None:
                yield ": keep-alive\n\n"
    except (*REDIS_UNREACHABLE, _ClientGone):
        return
    finally:
        pubsub.close()


def _seq(message: dict[str, Any]) -> int:
    return int(message["data"].partition(b" ")[0])


def _event(message: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(message["data"].partition(b" ")[2])
    return event


def _sse(seq: int, event: dict[str, Any]) -> str:
    data = json.dumps(event["data"])
    return f"id: {seq}\nevent: {event['event']}\ndata: {data}\n\n"


def _checked_id(job_id: str) -> str:
    if len(job_id) != 32 or not all(c in "0123456789abcdef" for c in job_id):
        raise NotFound(f"Job {job_id[:64]} was not found.")
    return job_id
