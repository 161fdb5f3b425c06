"""Each worker runs the `server` start-up workflow; /health/ready shows it."""

from __future__ import annotations

import json
import signal
import time

import pytest

pytestmark = pytest.mark.integration


def test_ready_lists_the_workers_server_reports_to_an_admin(
    client, worker, make_user, tenant
):
    admin = make_user(tenant, scopes=("admin",))
    deadline = time.monotonic() + 20
    while True:
        response = client.get("/health/ready", headers=admin)
        workers = response.get_json()["checks"]["workers"]
        if workers.get("reports") or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert response.status_code == 200
    report = workers["reports"][0]
    assert report["ready"] is True
    assert report["report"]["storage"] and report["report"]["redis"]
    assert {"auth_login", "resolve_latest", "server"} <= {
        entry["name"] for entry in report["report"]["workflows"]["workflows"]
    }


def test_ready_without_an_admin_token_says_how_many_workers_and_nothing_more(
    client, worker, make_user, tenant
):
    """Found by an adversarial pass: the reports (DATA_DIR, host names, every
    workflow's digest) were open to anyone; the admin-only `server`
    workflow was meant to keep them."""
    deadline = time.monotonic() + 20
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    for headers in ({}, make_user(tenant, scopes=("read", "write"))):
        workers = client.get("/health/ready", headers=headers).get_json()
        workers = workers["checks"]["workers"]

        assert workers["ok"] is True and workers["count"] >= 1
        assert "reports" not in workers
        assert "data_dir" not in json.dumps(workers)


def test_not_ready_without_a_live_worker(isolated_stack):
    stack = isolated_stack()

    response = stack.app.test_client().get("/health/ready")

    assert response.status_code == 503
    assert response.get_json()["checks"]["workers"]["ok"] is False


def test_a_stopped_worker_leaves_readiness_at_once(isolated_stack):
    import signal

    from packagerepo import keys

    stack = isolated_stack()
    worker = stack.add_worker()
    redis = stack.redis.client()
    pattern = keys.server_report("*")
    deadline = time.monotonic() + 20
    while not list(redis.scan_iter(pattern)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(redis.scan_iter(pattern))

    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(timeout=30)

    assert list(redis.scan_iter(pattern)) == []
    assert redis.zcard(keys.live_reports()) == 0
    assert redis.zcard(keys.live_consumers()) == 0


def test_readiness_on_a_redis_that_stops_answering_says_so_promptly(isolated_stack):
    """Found by a fresh-user pass: with Redis stopped (SIGSTOP) /health/ready
    took 20 s to answer 503, past any probe's timeout. A bound, not a speed:
    its checks give up after a second each."""
    stack = isolated_stack()
    client = stack.app.test_client()
    assert client.get("/health/ready").status_code == 503  # connections up
    stack.redis.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = client.get("/health/ready")
        elapsed = time.monotonic() - started
    finally:
        stack.redis.process.send_signal(signal.SIGCONT)

    assert response.status_code == 503
    assert response.get_json()["checks"]["redis"]["ok"] is False
    assert elapsed < 8, f"readiness answered after {elapsed:.1f} s"


def test_readiness_does_not_scan_the_keyspace(isolated_stack):
    """Found by an adversarial pass: readiness walked the whole keyspace
    twice with SCAN, 4-5 s with a million keys, past a probe's timeout."""
    stack = isolated_stack()
    stack.add_worker()
    client = stack.app.test_client()
    redis = stack.redis.client()
    deadline = time.monotonic() + 20
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "no worker became ready"
        time.sleep(0.1)
    redis.config_resetstat()

    answer = client.get("/health/ready")

    assert answer.status_code == 200
    assert answer.get_json()["checks"]["workers"]["count"] == 1
    assert "cmdstat_scan" not in redis.info("commandstats")
