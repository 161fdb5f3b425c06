"""Waiting for job ends on one shared connection per process
(``packagerepo.endings``), on the real Redis of the test session."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
import redis

from packagerepo.endings import EndedJobs
from packagerepo.jobs import JobStatus
from packagerepo.services import redis_client
from tests.test_jobs import submit
from tests.test_lifecycle import _register

pytestmark = pytest.mark.integration

SURELY_SECONDS = 10.0
"""Long enough that a waiter not woken by then was never going to be."""


def _queued_job(services, tenant: str) -> str:
    job = services.jobs.create(
        tenant=tenant, workflow="greet", digest="d", input={}, submitted_by="t"
    )
    return job["id"]


def _until(condition) -> bool:
    deadline = time.monotonic() + SURELY_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_job_that_ends_wakes_the_request_waiting_for_it(app, tenant):
    services = app.extensions["packagerepo"]
    ended = EndedJobs(services.redis)
    job_id, other = _queued_job(services, tenant), _queued_job(services, tenant)

    with (
        ended.waiting(tenant, job_id) as (waiter, _),
        ended.waiting(tenant, other) as (bystander, _),
    ):
        assert ended.waiting_count() == 2
        assert _until(ended.listening)
        # Subscribing wakes every waiter once, to look for itself.
        waiter.woken.clear()
        bystander.woken.clear()
        services.jobs.finish(tenant, job_id, JobStatus.SUCCEEDED)

        assert waiter.woken.wait(SURELY_SECONDS)
        assert not bystander.woken.is_set()
    assert ended.waiting_count() == 0


def test_an_end_announced_while_the_listener_reconnects_still_wakes_its_waiter(
    app, tenant
):
    services = app.extensions["packagerepo"]
    ended = EndedJobs(services.redis)
    job_id = _queued_job(services, tenant)
    admin = redis_client(services.settings.redis_url)

    with ended.waiting(tenant, job_id) as (waiter, _):
        assert _until(ended.listening)
        waiter.woken.clear()
        # The end is announced before the listener has subscribed again:
        # only the wake-up on subscribing can tell the waiter.
        admin.client_kill_filter(_type="pubsub")
        services.jobs.finish(tenant, job_id, JobStatus.SUCCEEDED)

        assert waiter.woken.wait(SURELY_SECONDS)
    assert _until(ended.listening)


def test_waiting_requests_share_one_connection(client, auth, workflows, worker):
    services = client.application.extensions["packagerepo"]
    # The first request starts the process's listener.
    client.post("/v1/workflows/greet/execute?wait=20", json={}, headers=auth)
    before = services.redis.info("stats")["total_connections_received"]

    for index in range(20):
        answer = client.post(
            "/v1/workflows/greet/execute?wait=20",
            json={"name": f"n{index}-{uuid.uuid4().hex[:4]}"},
            headers=auth,
        )
        assert answer.status_code == 200, answer.get_json()

    opened = services.redis.info("stats")["total_connections_received"] - before
    assert opened < 5, f"{opened} connections for 20 waiting requests"


def test_a_redis_blip_while_a_request_waits_is_waited_out(
    client, auth, workflows, worker, monkeypatch
):
    """Found by an adversarial pass: Redis restarting for a moment turned
    every waiting request into a 503 "try again", though its job ran."""
    jobs = client.application.extensions["packagerepo"].looks
    real_get = jobs.public
    blips: list[str] = []

    def blip_once(tenant, job_id):
        if not blips:
            blips.append(job_id)
            raise redis.ConnectionError("Redis is restarting")
        return real_get(tenant, job_id)

    monkeypatch.setattr(jobs, "public", blip_once)
    response = submit(client, auth, "slow", {"ms": 300}, "?wait=10")

    assert blips, "the wait never read the job"
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["result"] == {"slept": 300}


def test_a_waiting_request_reads_the_status_alone_until_the_job_ends(
    client, auth, workflows, worker, monkeypatch
):
    """Found by an adversarial pass: every waiter read the whole record,
    input and all, every second."""
    jobs = client.application.extensions["packagerepo"].looks
    real_get = jobs.public
    reads: list[str] = []

    def counting_get(tenant, job_id):
        reads.append(job_id)
        return real_get(tenant, job_id)

    monkeypatch.setattr(jobs, "public", counting_get)
    response = submit(client, auth, "slow", {"ms": 4000}, "?wait=2.5")
    job_id = response.get_json()["job"]["id"]
    whole_reads = reads.count(job_id)
    client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)  # free the worker

    assert response.status_code == 202
    assert whole_reads == 1  # the answer's own, once the wait ran out


def test_a_wait_on_a_redis_that_stops_answering_ends_near_its_deadline(
    isolated_stack,
):
    """Found by a fresh-user pass: with Redis stopped (SIGSTOP, so the
    connections stay open) a ?wait=3 answered after about 21 s, each look
    waiting out the 5 s socket timeout twice. A bound, not a speed: looks now
    give up after a second, so the answer comes within a few seconds of the
    deadline."""
    stack = isolated_stack()  # no worker: the job stays queued
    client = stack.app.test_client()
    auth = _register(stack, "acme")
    submit(client, auth, "greet", {"name": "warm"}, "?wait=0.1")  # connections up
    answers: list = []

    def waiting() -> None:
        started = time.monotonic()
        response = submit(client, auth, "greet", {"name": "w"}, "?wait=3")
        answers.append((response, time.monotonic() - started))

    thread = threading.Thread(target=waiting)
    thread.start()
    time.sleep(0.5)  # created: the request is waiting now
    stack.redis.process.send_signal(signal.SIGSTOP)
    try:
        thread.join(timeout=40)
    finally:
        stack.redis.process.send_signal(signal.SIGCONT)

    response, elapsed = answers[0]
    assert response.status_code == 202
    assert response.get_json()["job"]["status"] == "queued"
    assert elapsed < 9, f"a ?wait=3 answered after {elapsed:.1f} s"
