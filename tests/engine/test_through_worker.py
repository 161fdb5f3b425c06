"""The engine's semantics as seen through the API and a real worker process."""

from __future__ import annotations

import time

import pytest

from tests.engine.documents import node, workflow

pytestmark = pytest.mark.integration


ROUTE = workflow(
    [
        node("Start", "trigger.start"),
        node("Big?", "logic.if", parameters={"condition": "{{ $json.size > 10 }}"}),
        node(
            "Refuse",
            "logic.stop_and_error",
            onError="continueErrorOutput",
            parameters={"code": "TOO_BIG", "message": "Size {{ $json.size }}."},
        ),
        node(
            "Answer Error",
            "respond.error",
            parameters={
                "code": "{{ $json.error.code }}",
                "message": "{{ $json.error.message }}",
                "status": 413,
            },
        ),
        node("Accept", "respond.json", parameters={"body": {"ok": True}}),
    ],
    [
        ("Start", "Big?"),
        ("Big?", "Refuse", 0),
        ("Big?", "Accept", 1),
        ("Refuse", "Answer Error", "error"),
    ],
)
ROUTE["id"] = ROUTE["name"] = "engine-route"
ROUTE["settings"] = {"scope": "read"}


@pytest.fixture
def route(app, tenant: str) -> str:
    app.extensions["packagerepo"].catalog.save(tenant, ROUTE["id"], ROUTE)
    return ROUTE["id"]


def finished_job(client, auth, name: str, body: dict) -> dict:
    response = client.post(f"/v1/workflows/{name}/execute", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job"]["id"]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["job"]
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        time.sleep(0.05)
    raise AssertionError(f"Job {job_id} did not end.")


def test_branch_taken_through_a_worker_skips_the_other_branch(
    client, auth, route, worker
):
    job = finished_job(client, auth, route, {"size": 3})

    assert job["status"] == "succeeded"
    assert job["result"] == {"ok": True}
    statuses = {entry["name"]: entry["status"] for entry in job["nodes"]}
    assert statuses["Refuse"] == "skipped"
    assert statuses["Answer Error"] == "skipped"


def test_error_output_and_respond_error_through_a_worker(client, auth, route, worker):
    job = finished_job(client, auth, route, {"size": 30})

    assert job["status"] == "failed"
    assert job["error"]["code"] == "TOO_BIG"
    assert job["error"]["message"] == "Size 30."
    statuses = {entry["name"]: entry["status"] for entry in job["nodes"]}
    assert statuses == {
        "Start": "succeeded",
        "Big?": "succeeded",
        "Refuse": "failed",
        "Answer Error": "succeeded",
        "Accept": "not_run",  # the respond node ended the run before its turn
    }
