"""Job lifecycle with real worker processes: SSE, webhooks, leases after a
kill -9, per-tenant fairness and Redis restarts (design §5)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import signal
import socket
import threading
import time

import pytest

from packagerepo import keys, webhooks
from packagerepo.jobs import PUBLIC_FIELDS, JobStatus
from tests.conftest import GREET, SLOW
from tests.test_jobs import submit, wait_for_status
from worker.celery_app import QUEUE
from worker.reaper import Reaper

pytestmark = pytest.mark.integration


def sse_events(client, auth, job_id: str) -> list[tuple[int, str, dict]]:
    response = client.get(f"/v1/jobs/{job_id}/events", headers=auth)
    assert response.mimetype == "text/event-stream"
    events = []
    for block in response.get_data(as_text=True).split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line
        )
        if "event" in fields:
            events.append(
                (int(fields["id"]), fields["event"], json.loads(fields["data"]))
            )
    return events


def test_sse_replays_every_event_in_order_for_a_finished_job(
    client, auth, workflows, worker
):
    job_id = submit(client, auth, "greet", {"name": "a"}, "?wait=20").get_json()["job"][
        "id"
    ]

    events = sse_events(client, auth, job_id)

    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    kinds = [kind for _, kind, _ in events]
    assert kinds[0] == "status" and kinds[-1] == "done"
    assert [data["name"] for _, kind, data in events if kind == "node"] == [
        "Start", "Greet", "Answer",
    ]  # fmt: skip
    assert events[-1][2]["status"] == "succeeded"


def test_sse_follows_a_running_job_until_it_ends(client, auth, workflows, worker):
    job_id = submit(client, auth, "slow", {"ms": 600}).get_json()["job"]["id"]

    events = sse_events(client, auth, job_id)

    assert events[-1][1] == "done"
    assert events[-1][2]["status"] == "succeeded"


def test_sse_resumes_after_last_event_id(client, auth, workflows, worker):
    job_id = submit(client, auth, "greet", {"name": "a"}, "?wait=20").get_json()["job"][
        "id"
    ]
    everything = sse_events(client, auth, job_id)

    response = client.get(
        f"/v1/jobs/{job_id}/events", headers={**auth, "Last-Event-ID": "2"}
    )

    ids = [int(line[4:]) for line in response.get_data(as_text=True).splitlines()
           if line.startswith("id: ")]  # fmt: skip
    assert ids == [seq for seq, _, _ in everything if seq > 2]


def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_webhook_gets_the_final_job_signed_with_hmac(
    client, auth, workflows, worker, receiver, settings, tenant
):
    hook = receiver(200)
    job_id = submit(
        client, auth, "greet", {"name": "w"}, **{"X-Callback-Url": hook.url}
    ).get_json()["job"]["id"]

    wait_until(lambda: hook.deliveries)

    headers, body = hook.deliveries[0]
    stamp, mac = headers["X-PackageRepo-Signature"].split(",")
    timestamp = int(stamp.removeprefix("t="))
    secret = webhooks.tenant_secret(settings, tenant)
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    )
    assert mac == "v1=" + expected.hexdigest()
    delivered = json.loads(body)["job"]
    assert delivered["id"] == job_id
    assert delivered["status"] == "succeeded"
    assert "input" not in delivered
    # The job as the API shows it (an adversarial pass found the webhook
    # built from a deny-list, so every internal field went out with it).
    assert set(delivered) <= set(PUBLIC_FIELDS) - {"deliveries"}
    wait_until(
        lambda: client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["job"][
            "deliveries"
        ]
    )


def test_failing_webhook_receiver_gets_retries_recorded_on_the_job(
    client, auth, workflows, worker, receiver
):
    hook = receiver(500)
    job_id = submit(
        client, auth, "greet", {"name": "w"}, **{"X-Callback-Url": hook.url}
    ).get_json()["job"]["id"]

    def attempts() -> list:
        return client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["job"][
            "deliveries"
        ]

    wait_until(lambda: len(attempts()) == 3)
    assert len(hook.deliveries) == 3
    assert [attempt["status"] for attempt in attempts()] == [500, 500, 500]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
        "gopher://127.0.0.1/",
        "http://[::ffff:10.0.0.1]/",
    ],
)
def test_callback_urls_to_private_or_odd_destinations_are_refused(
    client, auth, workflows, url
):
    response = submit(client, auth, "greet", {}, **{"X-Callback-Url": url})

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_REQUEST"


def _register(stack, tenant: str) -> dict:
    services = stack.app.extensions["packagerepo"]
    for document in (GREET, SLOW):
        services.catalog.save(tenant, document["id"], document)
    identity = services.accounts.add_user(
        f"user-{tenant}", "pw", tenant=tenant, scopes=["read", "write"]
    )
    return {"Authorization": f"Bearer {services.accounts.issue_token(identity)[0]}"}


def test_job_survives_its_worker_being_killed(isolated_stack):
    stack = isolated_stack(LEASE_SECONDS="2")
    first = stack.add_worker()
    client = stack.app.test_client()
    auth = _register(stack, "acme")

    job_id = submit(client, auth, "slow", {"ms": 4000}).get_json()["job"]["id"]
    wait_for_status(client, auth, job_id, {"running"})
    os.killpg(first.process.pid, signal.SIGKILL)
    stack.add_worker()

    job = wait_for_status(client, auth, job_id, {"succeeded", "failed"}, timeout=60)
    assert job["status"] == "succeeded"
    # At least one re-run; on a loaded machine a lease can lapse once more.
    assert job["attempts"] >= 2


def test_job_whose_workers_keep_dying_ends_worker_lost(isolated_stack):
    stack = isolated_stack(LEASE_SECONDS="1", MAX_ATTEMPTS="1")
    doomed = stack.add_worker()
    client = stack.app.test_client()
    auth = _register(stack, "acme")

    job_id = submit(client, auth, "slow", {"ms": 5000}).get_json()["job"]["id"]
    wait_for_status(client, auth, job_id, {"running"})
    os.killpg(doomed.process.pid, signal.SIGKILL)
    stack.add_worker()

    job = wait_for_status(client, auth, job_id, {"succeeded", "failed"}, timeout=30)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "WORKER_LOST"


def test_a_flooding_tenant_does_not_starve_another(isolated_stack):
    stack = isolated_stack(TENANT_MAX_RUNNING="1")
    stack.add_worker()
    stack.add_worker()
    client = stack.app.test_client()
    jobs = stack.app.extensions["packagerepo"].jobs
    flooder, other = _register(stack, "flood"), _register(stack, "quiet")

    flood = [
        submit(client, flooder, "slow", {"ms": 200}).get_json()["job"]["id"]
        for _ in range(500)
    ]
    lone = submit(client, other, "greet", {"name": "q"}).get_json()["job"]["id"]

    wait_for_status(client, other, lone, {"succeeded"}, timeout=60)
    succeeded = sum(jobs.status("flood", job_id) == "succeeded" for job_id in flood)
    # The flood runs one job at a time (cap 1, 200 ms each); the other
    # tenant's job, queued behind all 500, ran after only a handful of them.
    assert succeeded <= 25


def test_every_job_deferred_by_the_cap_runs_in_the_end(isolated_stack):
    stack = isolated_stack(TENANT_MAX_RUNNING="2")
    stack.add_worker()
    stack.add_worker()
    client = stack.app.test_client()
    auth = _register(stack, "capped")

    ids = [
        submit(client, auth, "slow", {"ms": 50}).get_json()["job"]["id"]
        for _ in range(30)
    ]

    ended = [wait_for_status(client, auth, job_id, {"succeeded"}) for job_id in ids]
    assert all(job["attempts"] == 1 for job in ended)


def test_accepted_jobs_survive_a_redis_restart(isolated_stack):
    stack = isolated_stack()
    client = stack.app.test_client()
    auth = _register(stack, "acme")
    ids = [
        submit(client, auth, "greet", {"n": i}).get_json()["job"]["id"]
        for i in range(5)
    ]

    stack.redis.stop()  # SIGTERM: Redis writes its append-only file and exits
    stack.redis.start()
    stack.add_worker()

    for job_id in ids:
        assert (
            wait_for_status(client, auth, job_id, {"succeeded"})["status"]
            == "succeeded"
        )


def test_no_accepted_job_is_lost_while_workers_are_killed_and_restarted(
    isolated_stack,
):
    stack = isolated_stack(LEASE_SECONDS="2", MAX_ATTEMPTS="5", TENANT_MAX_RUNNING="10")
    stack.add_worker()
    stack.add_worker()
    client = stack.app.test_client()
    auth = _register(stack, "acme")

    ids = [
        submit(client, auth, "slow", {"ms": 50}).get_json()["job"]["id"]
        for _ in range(200)
    ]
    for _ in range(3):
        time.sleep(1.0)
        victim = stack.workers.pop(0)
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait()
        stack.add_worker()

    ended = [
        wait_for_status(client, auth, job_id, {"succeeded", "failed"}, timeout=90)
        for job_id in ids
    ]
    # Every accepted job ended; a loaded machine may make a lease lapse more
    # than a kill does, but a job then ends WORKER_LOST, never stays queued.
    assert len(ended) == len(ids)
    failures = [job["error"]["code"] for job in ended if job["status"] == "failed"]
    assert set(failures) <= {"WORKER_LOST"}
    assert len(failures) <= 3


def test_a_job_delivered_to_a_worker_that_died_before_claiming_it_still_runs(
    isolated_stack,
):
    import psutil

    stack = isolated_stack(LEASE_SECONDS="1")
    doomed = stack.add_worker()
    client = stack.app.test_client()
    auth = _register(stack, "acme")
    redis = stack.redis.client()
    # A stopped pool process: the worker takes the message but never claims.
    for child in psutil.Process(doomed.process.pid).children():
        child.suspend()

    job_id = submit(client, auth, "greet", {"name": "o"}).get_json()["job"]["id"]
    wait_until(lambda: redis.zcard("unacked_index") == 1)
    os.killpg(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait()
    stack.add_worker()

    job = wait_for_status(client, auth, job_id, {"succeeded", "failed"}, timeout=30)
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1


def test_closed_event_streams_give_their_slot_back(
    client, auth, workflows, worker, app
):
    job_id = submit(client, auth, "greet", {"name": "a"}, "?wait=20").get_json()["job"][
        "id"
    ]
    slots = app.extensions["packagerepo"].settings.sse_max_streams

    statuses = []
    for _ in range(slots + 5):
        response = client.get(f"/v1/jobs/{job_id}/events", headers=auth)
        response.get_data()  # the client reads the stream to its end
        response.close()
        statuses.append(response.status_code)

    assert set(statuses) == {200}


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        # Found by an adversarial pass (Python calls these global):
        "::ffff:0:7f00:1",  # SIIT, IPv4-translated (RFC 6145)
        "64:ff9b:1::7f00:1",  # local-use NAT64 (RFC 8215)
        "64:ff9b:1:a9fe:a9:fe00::",  # 169.254.169.254 in it, RFC 6052 layout
        "fec0::1",  # deprecated site-local
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_not_public(address, settings):
    from packagerepo.errors import InvalidRequest
    from packagerepo.webhooks import check_destination

    strict = dataclasses.replace(settings, webhook_allow_loopback=False)

    with pytest.raises(InvalidRequest):
        check_destination(f"http://[{address}]/hook", strict)


def test_a_job_whose_message_was_lost_is_sent_again(isolated_stack):
    stack = isolated_stack(LEASE_SECONDS="1")
    client = stack.app.test_client()
    auth = _register(stack, "acme")
    redis = stack.redis.client()
    job_id = submit(client, auth, "greet", {"name": "l"}).get_json()["job"]["id"]
    # The message vanishes between the broker and a worker (as when a worker
    # dies after taking it off the queue, before kombu records it).
    assert redis.delete("packagerepo") == 1

    stack.add_worker()

    job = wait_for_status(client, auth, job_id, {"succeeded", "failed"}, timeout=40)
    assert job["status"] == "succeeded"


def test_a_job_waiting_behind_a_backlog_is_not_sent_again(isolated_stack):
    stack = isolated_stack(LEASE_SECONDS="1")  # no worker: messages stay queued
    services = stack.app.extensions["packagerepo"]
    redis = stack.redis.client()
    job = services.jobs.create(
        tenant="backlog", workflow="greet", digest="d", input={}, submitted_by="t"
    )
    # The job's message was sent long ago and is still unseen.
    redis.zadd(keys.sent_jobs(), {f"backlog/{job['id']}": 1.0})
    sent: list[str] = []
    reaper = Reaper(services, lambda _tenant, job: sent.append(job), sent.append)

    redis.rpush(QUEUE, "a message ahead of it")
    reaper.reap_once()
    assert sent == []  # still waiting in the queue, perhaps: left alone

    redis.delete(QUEUE)
    reaper.reap_once()
    assert sent == [job["id"]]  # the queue drained without it: it was lost


def test_sse_sends_events_whose_announcement_it_missed_from_the_log(isolated_stack):
    """Found by an adversarial pass: events published while the stream's
    subscription was down (redis-py subscribes again by itself) were never
    sent, and the stream could end on a `done` of its own making whose id
    was another event's."""
    stack = isolated_stack()  # no worker: the test moves the job itself
    client = stack.app.test_client()
    auth = _register(stack, "acme")
    services = stack.app.extensions["packagerepo"]
    job_id = submit(client, auth, "greet", {"name": "s"}).get_json()["job"]["id"]
    body: list[str] = []

    def read() -> None:
        response = client.get(f"/v1/jobs/{job_id}/events", headers=auth)
        body.append(response.get_data(as_text=True))

    reader = threading.Thread(target=read)
    reader.start()
    redis = stack.redis.client()
    wait_until(lambda: redis.pubsub_numsub(keys.job_events("acme", job_id))[0][1] == 1)
    time.sleep(0.5)  # past the replay of the log that follows the subscription

    # An event that reaches the log while no one hears it, then the end.
    missed = json.dumps({"event": "node", "data": {"name": "Missed"}})
    redis.rpush(keys.job_event_log("acme", job_id), missed)
    services.jobs.finish("acme", job_id, JobStatus.SUCCEEDED)
    reader.join(timeout=30)

    ids = [
        int(line[4:]) for line in "".join(body).splitlines() if line.startswith("id: ")
    ]
    logged = services.jobs.events_since("acme", job_id, 0)
    assert ids == [seq for seq, _ in logged]
    assert "Missed" in "".join(body)


def test_sse_resumed_at_the_end_of_an_ended_job_closes_at_once(isolated_stack):
    """Found by an adversarial pass: a stream resumed at or past the `done`
    of an ended job sent keep-alives until SSE_MAX_SECONDS, and a browser's
    EventSource reconnects with its last id, so each open tab held a stream
    slot for good. A bound, not a speed: it used to wait a heartbeat (15 s)
    at least."""
    stack = isolated_stack()  # no worker: the test ends the job itself
    client = stack.app.test_client()
    auth = _register(stack, "acme")
    services = stack.app.extensions["packagerepo"]
    job_id = submit(client, auth, "greet", {"name": "e"}).get_json()["job"]["id"]
    services.jobs.finish("acme", job_id, JobStatus.CANCELLED)
    last = services.jobs.events_since("acme", job_id, 0)[-1][0]

    for resume_at in (last, last + 5):
        started = time.monotonic()
        response = client.get(
            f"/v1/jobs/{job_id}/events",
            headers={**auth, "Last-Event-ID": str(resume_at)},
        )
        body = response.get_data(as_text=True)
        assert "event:" not in body
        assert time.monotonic() - started < 10


def test_a_dead_workers_delivery_is_found_behind_many_held_ones(isolated_stack):
    """Found by an adversarial pass: the reaper looked at the 100 oldest
    deliveries only, so 100 held on purpose (webhook retries waiting for
    their eta) hid every delivery a dead worker left behind."""
    from worker.celery_app import execute_message, make_celery

    stack = isolated_stack(LEASE_SECONDS="1")  # no worker
    services = stack.app.extensions["packagerepo"]
    redis = stack.redis.client()
    celery = make_celery(services.settings)
    job = services.jobs.create(
        tenant="held", workflow="greet", digest="d", input={}, submitted_by="t"
    )
    unacked, index = keys.celery_unacked()
    long_ago = time.time() - 3600
    for number in range(150):  # held webhook retries, the oldest
        _queue, held = execute_message(celery, "f" * 32, tenant="held")
        redis.hset(unacked, f"held-{number}", json.dumps([json.loads(held), "", QUEUE]))
        redis.zadd(index, {f"held-{number}": long_ago + number})
    _queue, orphan = execute_message(celery, job["id"], tenant="held")
    redis.hset(unacked, "orphan", json.dumps([json.loads(orphan), "", QUEUE]))
    redis.zadd(index, {"orphan": long_ago + 200})
    sent: list[str] = []
    reaper = Reaper(services, lambda _tenant, job_id: sent.append(job_id), sent.append)

    reaper.reap_once()

    assert sent == [job["id"]]


def test_a_pool_process_past_its_memory_limit_is_replaced_after_its_job(
    isolated_stack,
):
    """Python keeps the memory a big run took; past WORKER_MAX_MEMORY_MIB
    (here 1 MiB: every process is past it) the pool process is replaced once
    its job has ended, and the next job runs in a new one."""
    stack = isolated_stack(WORKER_MAX_MEMORY_MIB="1")
    stack.add_worker()
    client = stack.app.test_client()
    auth = _register(stack, "acme")
    jobs = stack.app.extensions["packagerepo"].jobs

    ran_in = []
    for name in ("first", "second"):
        job_id = submit(client, auth, "greet", {"name": name}).get_json()["job"]["id"]
        ended = wait_for_status(client, auth, job_id, {"succeeded", "failed"})
        assert ended["status"] == "succeeded"
        worker = jobs.get("acme", job_id)["worker"]
        ran_in.append(worker.split("/")[0])  # host:pid of the pool process

    assert ran_in[0] != ran_in[1]


def test_slow_webhook_receivers_do_not_hold_up_other_jobs(isolated_stack):
    """Found by an adversarial pass: webhook deliveries shared the job
    queue and pool, so one tenant's callbacks to a receiver that never
    answers (5 s per attempt, retried) kept every tenant's jobs queued for
    a minute. They have a queue and workers of their own."""
    from worker.celery_app import QUEUE, WEBHOOK_QUEUE

    stack = isolated_stack()
    stack.add_worker(queues=(QUEUE,))
    stack.add_worker(queues=(WEBHOOK_QUEUE,))
    client = stack.app.test_client()
    slow_tenant = _register(stack, "slowhooks")
    other = _register(stack, "bystander")
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)  # never answers
    hook = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
    try:
        for n in range(4):
            submitted = submit(
                client, slow_tenant, "greet", {"name": f"s{n}"}, "?wait=10",
                **{"X-Callback-Url": hook},
            )  # fmt: skip
            assert submitted.status_code == 200

        answer = submit(client, other, "greet", {"name": "b"}, "?wait=8")

        assert answer.status_code == 200
        assert answer.get_json()["job"]["status"] == "succeeded"
    finally:
        silent.close()
