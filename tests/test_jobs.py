"""Submit, poll, wait, list and cancel jobs through a real worker process."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


def submit(client, auth, name: str, body: dict, query: str = "", **headers):
    return client.post(
        f"/v1/workflows/{name}/execute{query}", json=body, headers={**auth, **headers}
    )


def wait_for_status(client, auth, job_id: str, statuses: set[str], timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["job"]
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {job['status']}")


def test_execute_answers_202_with_a_location_and_the_job_succeeds(
    client, auth, workflows, worker
):
    response = submit(client, auth, "greet", {"name": "Ada"})

    assert response.status_code == 202
    job = response.get_json()["job"]
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["links"]["self"] == f"/v1/jobs/{job['id']}"
    # A queued job already says how many nodes it will run.
    assert job["progress"] == {"done": 0, "total": 3}

    done = wait_for_status(client, auth, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["result"] == {"name": "Ada", "greeting": "Hello, Ada!"}
    assert [n["name"] for n in done["nodes"]] == ["Start", "Greet", "Answer"]
    assert done["progress"]["done"] == done["progress"]["total"] == 3


def test_a_running_job_shows_the_nodes_it_has_run_before_it_ends(
    client, auth, workflows, worker
):
    # Node records are written in batches; a node that ended is still shown
    # within moments, not only when the whole run ends.
    job_id = submit(client, auth, "slow", {"ms": 3000}).get_json()["job"]["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["job"]
        if job["status"] == "running" and job["progress"]["done"] >= 1:
            break
        time.sleep(0.05)

    assert job["status"] == "running"
    assert job["progress"] == {"done": 1, "total": 3}
    assert [(n["name"], n["status"]) for n in job["nodes"]][:1] == [
        ("Start", "succeeded")
    ]


def test_wait_answers_200_with_the_result_when_the_job_ends_in_time(
    client, auth, workflows, worker
):
    response = submit(client, auth, "greet", {"name": "Grace"}, "?wait=20")

    assert response.status_code == 200
    assert response.get_json()["result"]["greeting"] == "Hello, Grace!"


@pytest.mark.parametrize("wait", ["1_0", "%EF%BC%95", "1e1", "-0", "0x1"])
def test_wait_must_be_written_as_plain_decimal_seconds(client, auth, workflows, wait):
    """Found by an adversarial pass: float() took "1_0" as 10 and a
    full-width digit as 5."""
    response = submit(client, auth, "greet", {}, f"?wait={wait}")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_REQUEST"


def test_wait_longer_than_thirty_seconds_is_refused(client, auth, workflows):
    response = submit(client, auth, "greet", {}, "?wait=31")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_REQUEST"


def test_wait_that_runs_out_answers_202(client, auth, workflows, worker):
    response = submit(client, auth, "slow", {"ms": 1500}, "?wait=0.2")

    assert response.status_code == 202


def test_a_wait_that_runs_out_answers_with_the_job_as_it_is_now(
    client, auth, workflows, worker
):
    """Found by a fresh user: the 202 showed the job as submitted (queued,
    no start) although the worker had started it long before."""
    # Long enough a wait for the worker to finish what earlier tests left it
    # and start this job; the job itself runs longer still.
    response = submit(client, auth, "slow", {"ms": 6000}, "?wait=3")

    job = response.get_json()["job"]
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)  # free the worker
    assert response.status_code == 202
    assert job["status"] == "running"
    assert job["started_at"] is not None and job["attempts"] == 1


def test_another_tenants_job_is_not_found(client, auth, workflows, worker, make_user):
    job_id = submit(client, auth, "greet", {"name": "x"}).get_json()["job"]["id"]
    stranger = make_user("someone-else")

    response = client.get(f"/v1/jobs/{job_id}", headers=stranger)

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("job_id", ["../../etc", "x" * 500, "0" * 31 + "g"])
def test_hostile_job_ids_are_not_found(client, auth, job_id):
    response = client.get(f"/v1/jobs/{job_id}", headers=auth)

    assert response.status_code == 404


def test_unknown_workflow_is_workflow_not_found(client, auth):
    response = submit(client, auth, "no_such_workflow", {})

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "WORKFLOW_NOT_FOUND"


def test_invalid_workflow_is_refused_with_details(client, app, auth, tenant):
    broken = {"id": "b", "name": "broken", "nodes": [], "connections": {}}
    app.extensions["packagerepo"].catalog.save(tenant, "broken", broken)

    response = submit(client, auth, "broken", {})

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "WORKFLOW_VALIDATION_ERROR"
    assert error["details"]


def test_execute_needs_a_token_for_scoped_workflows(client, workflows):
    response = client.post("/v1/workflows/greet/execute", json={})

    assert response.status_code in {401, 404}


def test_same_idempotency_key_and_body_returns_the_same_job(
    client, auth, workflows, worker
):
    key = {"Idempotency-Key": "order-42"}
    first = submit(client, auth, "greet", {"name": "a"}, **key)
    second = submit(client, auth, "greet", {"name": "a"}, **key)

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.get_json()["job"]["id"] == first.get_json()["job"]["id"]


def test_same_idempotency_key_with_another_body_is_422(client, auth, workflows, worker):
    key = {"Idempotency-Key": "order-43"}
    submit(client, auth, "greet", {"name": "a"}, **key)

    response = submit(client, auth, "greet", {"name": "b"}, **key)

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_cancel_stops_a_running_job_between_nodes(client, auth, workflows, worker):
    job_id = submit(client, auth, "slow", {"ms": 3000}).get_json()["job"]["id"]
    wait_for_status(client, auth, job_id, {"running"})

    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)

    assert response.status_code == 200
    assert response.get_json()["outcome"] in {"cancelling", "cancelled"}
    job = wait_for_status(client, auth, job_id, {"cancelled", "succeeded", "failed"})
    assert job["status"] == "cancelled"
    assert job["error"]["code"] == "CANCELLED"
    assert "Answer" not in [
        n["name"] for n in job["nodes"] if n["status"] == "succeeded"
    ]


def test_wait_on_a_job_cancelled_while_running_answers_409_cancelled(
    client, auth, workflows, worker, app
):
    import threading

    submitted = []

    def cancel_when_running() -> None:
        while not submitted:
            time.sleep(0.01)
        wait_for_status(client, auth, submitted[0], {"running"})
        client.post(f"/v1/jobs/{submitted[0]}/cancel", headers=auth)

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    jobs = app.extensions["packagerepo"].jobs
    original = jobs.create

    def remember(**fields):
        job = original(**fields)
        submitted.append(job["id"])
        return job

    jobs.create = remember
    try:
        response = submit(client, auth, "slow", {"ms": 3000}, "?wait=20")
    finally:
        jobs.create = original
        canceller.join()

    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "CANCELLED"


def test_progress_is_complete_when_a_respond_node_ends_the_run(
    client, app, auth, tenant, worker
):
    from tests.conftest import node

    document = {
        "id": "early",
        "name": "early",
        "nodes": [
            node("Start", "trigger.start", 0),
            node("Check", "logic.if", 200, condition="{{ $json.go }}"),
            node("Yes", "respond.json", 400, body={"went": True}),
            node("No", "logic.noop", 400),
            node("After", "respond.json", 600, body={"went": False}),
        ],
        "connections": {
            "Start": {"main": [[{"node": "Check", "type": "main", "index": 0}]]},
            "Check": {
                "main": [
                    [{"node": "Yes", "type": "main", "index": 0}],
                    [{"node": "No", "type": "main", "index": 0}],
                ]
            },
            "No": {"main": [[{"node": "After", "type": "main", "index": 0}]]},
        },
        "settings": {"scope": "read"},
    }
    app.extensions["packagerepo"].catalog.save(tenant, "early", document)

    response = submit(client, auth, "early", {"go": True}, "?wait=20")

    progress = response.get_json()["job"]["progress"]
    assert progress["done"] == progress["total"] == 5


def test_cancelling_an_ended_job_is_a_conflict(client, auth, workflows, worker):
    response = submit(client, auth, "greet", {"name": "z"}, "?wait=20")
    job_id = response.get_json()["job"]["id"]

    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)

    assert again.status_code == 409


def test_jobs_list_is_newest_first_filtered_and_paginated(
    client, auth, workflows, worker
):
    ids = [
        submit(client, auth, "greet", {"n": i}).get_json()["job"]["id"]
        for i in range(5)
    ]
    for job_id in ids:
        wait_for_status(client, auth, job_id, {"succeeded"})

    first = client.get("/v1/jobs?limit=3&workflow=greet", headers=auth).get_json()
    second = client.get(
        f"/v1/jobs?limit=3&workflow=greet&cursor={first['next_cursor']}", headers=auth
    ).get_json()

    listed = [job["id"] for job in first["jobs"] + second["jobs"]]
    assert listed == list(reversed(ids))
    assert second["next_cursor"] is None
    failed = client.get("/v1/jobs?status=failed", headers=auth).get_json()
    assert failed["jobs"] == []


@pytest.mark.parametrize(
    "query",
    # Found by an adversarial pass: int() and float() take other scripts'
    # digits and signs, so these were a page (or an empty one), not a 400.
    ["limit=\uff11", "limit=\u0663", "limit=+5", "limit= 5", "cursor=-1",
     "cursor=\uff11", "cursor=1e400", "cursor=nan", "cursor=0x10"],
)  # fmt: skip
def test_a_job_list_query_that_is_not_plain_digits_is_refused(client, auth, query):
    answer = client.get(f"/v1/jobs?{query}", headers=auth)

    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "INVALID_REQUEST"


def test_a_re_registered_workflow_is_never_served_stale(client, auth, worker):
    import copy

    from tests.conftest import GREET

    edited = copy.deepcopy(GREET)
    edited["nodes"][1]["parameters"]["values"]["greeting"] = "Bye, {{ $json.name }}!"

    first = client.put("/v1/workflows/versioned", json=GREET, headers=auth)
    before = submit(client, auth, "versioned", {"name": "A"}, "?wait=20")
    second = client.put("/v1/workflows/versioned", json=edited, headers=auth)
    after = submit(client, auth, "versioned", {"name": "A"}, "?wait=20")

    assert (first.status_code, second.status_code) == (201, 200)
    assert before.get_json()["result"]["greeting"] == "Hello, A!"
    assert after.get_json()["result"]["greeting"] == "Bye, A!"


def test_an_anonymous_login_job_and_its_token_expire_within_minutes(
    client, app, tenant, worker
):
    from packagerepo import keys

    accounts = app.extensions["packagerepo"].accounts
    accounts.add_user(f"anon-{tenant}", "pw", tenant=tenant, scopes=["read"])
    redis = app.extensions["packagerepo"].redis

    response = client.post(
        "/v1/workflows/auth_login/execute?wait=20",
        json={"username": f"anon-{tenant}", "password": "pw"},
    )

    assert response.status_code == 200
    job_id = response.get_json()["job"]["id"]
    assert 0 < redis.ttl(keys.job("public", job_id)) <= keys.ANONYMOUS_JOB_TTL
    assert 0 < redis.ttl(keys.job_event_log("public", job_id)) <= keys.ANONYMOUS_JOB_TTL


def test_guessing_passwords_through_auth_login_meets_the_login_rate_limit(
    client, app, tenant, worker
):
    """Found by an adversarial pass: LOGIN_RATE held for POST /auth/login
    only; the bundled auth_login workflow took 25 guesses a minute and
    answered the right password with a token while /auth/login refused."""
    services = app.extensions["packagerepo"]
    username = f"guessed-{tenant}"
    services.accounts.add_user(username, "right", tenant=tenant, scopes=["read"])
    allowed = int(services.settings.login_rate.split("/")[0])

    def attempt(password: str):
        return client.post(
            "/v1/workflows/auth_login/execute?wait=20",
            json={"username": username, "password": password},
        )

    guesses = [attempt(f"guess-{n}").status_code for n in range(allowed)]
    refused = attempt("guess-last")
    right = attempt("right")

    assert guesses == [401] * allowed
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "RATE_LIMITED"
    assert right.status_code == 429  # no token while the limit holds
    assert "token" not in (right.get_json().get("result") or {})


def test_polling_with_wait_answers_when_the_job_ends(client, auth, workflows, worker):
    job_id = submit(client, auth, "slow", {"ms": 500}).get_json()["job"]["id"]

    polled = client.get(f"/v1/jobs/{job_id}?wait=20", headers=auth)
    too_long = client.get(f"/v1/jobs/{job_id}?wait=31", headers=auth)

    assert polled.get_json()["job"]["status"] == "succeeded"
    assert too_long.status_code == 400


def test_tenant_workflow_names_never_become_metric_labels(client, auth, workflows):
    from packagerepo import metrics

    submit(client, auth, "greet", {"name": "m"})
    labels = {
        sample.labels.get("workflow")
        for family in metrics.JOBS_SUBMITTED.collect()
        for sample in family.samples
    }

    assert "greet" not in labels
    assert "tenant" in labels


def test_answers_about_a_job_leave_its_input_in_redis(isolated_stack):
    """Polling a job read its whole record, input included, to answer with
    the fields a client sees: a publish's input is the whole artifact."""
    from tests.test_lifecycle import _register

    stack = isolated_stack()  # no worker: the job stays queued
    client = stack.app.test_client()
    auth = _register(stack, "acme")
    job_id = submit(client, auth, "greet", {"name": "x" * 400_000}).get_json()["job"][
        "id"
    ]
    redis = stack.redis.client()

    def sent_by_redis() -> int:
        return int(redis.info("stats")["total_net_output_bytes"])

    before = sent_by_redis()
    for _ in range(5):
        answer = client.get(f"/v1/jobs/{job_id}", headers=auth)
        assert answer.status_code == 200 and "input" not in answer.get_json()["job"]
    assert sent_by_redis() - before < 100_000  # five whole reads: 2 MB
