"""Prometheus metrics: the API's /metrics under gunicorn adds up its own
processes and the workers' (one multiprocess directory), the worker's own
exporter, bounded labels, queue depth, leases reaped."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from packagerepo.jobs import JobStore
from packagerepo.services import Services
from tests.conftest import GREET
from worker.tasks import CountingReaper

pytestmark = pytest.mark.integration


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        sample_value
        for sample_name, sample_labels, sample_value in samples(text)
        if sample_name == name and labels.items() <= sample_labels.items()
    )


def scrape(url: str) -> str:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def test_requests_are_counted_by_flask_rule_never_by_raw_path(live):
    job_id = uuid.uuid4().hex
    requests.get(f"{live.url}/v1/jobs/{job_id}", timeout=10)
    requests.get(f"{live.url}/no/such/{job_id}", timeout=10)

    text = scrape(live.url)

    assert job_id not in text
    assert (
        value(
            text,
            "packagerepo_http_requests_total",
            endpoint="/v1/jobs/<job_id>",
            status="404",
        )
        >= 1
    )
    assert value(text, "packagerepo_http_requests_total", endpoint="<unmatched>") >= 1
    assert (
        value(
            text,
            "packagerepo_http_request_duration_seconds_count",
            endpoint="/v1/jobs/<job_id>",
        )
        >= 1
    )


def test_a_job_shows_up_as_submitted_started_finished_with_node_timings(
    live, live_auth, live_tenant
):
    for _ in range(2):
        answer = requests.post(
            f"{live.url}/v1/workflows/greet/execute?wait=20",
            json={"name": "metrics"},
            headers=live_auth,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text

    text = scrape(live.url)

    # A tenant's own workflow is labelled "tenant", never by its name.
    labels = {"workflow": "tenant", "tenant": live_tenant}
    assert value(text, "packagerepo_jobs_submitted_total", **labels) == 2
    assert value(text, "packagerepo_jobs_started_total", **labels) == 2
    assert (
        value(text, "packagerepo_jobs_finished_total", outcome="succeeded", **labels)
        == 2
    )
    assert (
        value(
            text,
            "packagerepo_job_duration_seconds_count",
            workflow="tenant",
            outcome="succeeded",
        )
        >= 2
    )
    assert (
        value(text, "packagerepo_node_duration_seconds_count", node_type="data.set")
        >= 2
    )
    # The API validated (a miss, then hits) and the worker fetched by digest.
    assert value(text, "packagerepo_workflow_cache_lookups_total") >= 3
    assert value(text, "packagerepo_queue_depth", queue="packagerepo") >= 0


def test_the_worker_serves_its_own_metrics_on_its_port(live, live_auth):
    answer = requests.post(
        f"{live.url}/v1/workflows/greet/execute?wait=20",
        json={"name": "exporter"},
        headers=live_auth,
        timeout=30,
    )
    assert answer.status_code == 200

    text = requests.get(f"http://127.0.0.1:{live.worker_metrics_port}/", timeout=10)

    assert value(text.text, "packagerepo_jobs_finished_total", workflow="tenant") >= 1


def test_queue_depth_counts_messages_no_worker_has_taken(isolated_stack, make_user):
    stack = isolated_stack()  # no worker: messages stay queued
    client = stack.app.test_client()
    services = stack.app.extensions["packagerepo"]
    tenant = f"t{uuid.uuid4().hex[:12]}"
    services.catalog.save(tenant, GREET["id"], GREET)
    identity = services.accounts.add_user(
        f"u-{uuid.uuid4().hex[:8]}", "pw-queue", tenant=tenant, scopes=["read"]
    )
    token, _ = services.accounts.issue_token(identity)
    for _ in range(3):
        answer = client.post(
            "/v1/workflows/greet/execute",
            json={"name": "q"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 202

    text = client.get("/metrics").get_data(as_text=True)

    assert value(text, "packagerepo_queue_depth", queue="packagerepo") == 3


def test_the_reaper_counts_the_leases_it_reaps(isolated_stack):
    stack = isolated_stack(LEASE_SECONDS="1")
    services: Services = stack.app.extensions["packagerepo"]
    jobs = JobStore(services.redis, lease_seconds=0)
    job = jobs.create(
        tenant="reaped", workflow="greet", digest="d", input={}, submitted_by="t"
    )
    assert jobs.claim("reaped", job["id"], "gone-worker")[0] == "claimed"
    time.sleep(0.05)
    requeued: list[str] = []
    before = REGISTRY.get_sample_value("packagerepo_leases_reaped_total") or 0

    acted = CountingReaper(
        services, lambda _tenant, job: requeued.append(job), requeued.append
    ).reap_once()

    assert acted == 1 and requeued == [job["id"]]
    assert REGISTRY.get_sample_value("packagerepo_leases_reaped_total") == before + 1
