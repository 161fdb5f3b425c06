"""Creating a job with its message when Redis answers badly: a create sent
again after a lost reply, an Idempotency-Key whose first request failed.

Found by an adversarial pass (a proxy that swallowed the reply to the first
EXEC): redis-py sends a command again once when its reply is lost, and the
second create reset a job a worker had already run to ``queued``, so it ran
twice; the 503 that followed released the key, so a retry ran a third time.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from packagerepo import keys
from packagerepo.errors import IdempotencyKeyReused
from packagerepo.idempotency import Binding, KeyMoved
from packagerepo.jobs import JobStatus, event_json
from tests.conftest import GREET
from worker.celery_app import QUEUE, execute_message, make_celery
from worker.runner import JobObserver

pytestmark = pytest.mark.integration


def _create(services, tenant: str, job_id: str):
    app = make_celery(services.settings)
    return services.jobs.create(
        tenant=tenant,
        workflow="greet",
        digest="d",
        input={"name": "x"},
        submitted_by="t",
        job_id=job_id,
        message=execute_message(app, job_id, 5, tenant=tenant),
    )


def _messages_for(client, job_id: str) -> int:
    return sum(job_id in raw.decode() for raw in client.lrange(QUEUE, 0, -1))


def test_a_create_sent_again_after_the_job_ran_changes_nothing(isolated_stack):
    stack = isolated_stack()  # no worker: the message stays in the queue
    services = stack.app.extensions["packagerepo"]
    tenant, job_id = "acme", uuid.uuid4().hex
    _create(services, tenant, job_id)
    assert services.jobs.claim(tenant, job_id, "w1")[0] == "claimed"
    services.jobs.finish(tenant, job_id, JobStatus.SUCCEEDED, owner="w1")

    _create(services, tenant, job_id)  # what redis-py's retry sends

    job = services.jobs.get(tenant, job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert _messages_for(stack.redis.client(), job_id) == 1


def _keyed_stack(isolated_stack, key: str):
    """A stack of the test's own with greet in tenant acme, and the headers
    of a user of acme sending Idempotency-Key ``key``."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    identity = services.accounts.add_user(
        f"u-{uuid.uuid4().hex[:8]}", "pw-create", tenant="acme", scopes=["read"]
    )
    token, _ = services.accounts.issue_token(identity)
    services.catalog.save("acme", GREET["id"], GREET)
    return stack, services, {"Authorization": f"Bearer {token}", "Idempotency-Key": key}


def test_a_retry_after_an_unknown_outcome_gets_the_job_the_key_is_bound_to(
    isolated_stack, monkeypatch
):
    """The create's reply was lost twice (was it written?): the key stays
    bound, and the retry answers with the job once it exists, never a
    second job."""
    stack, services, headers = _keyed_stack(isolated_stack, "k-lost")
    real = services.jobs.create
    created: list[str] = []

    def written_but_reply_lost(**job):
        created.append(real(**job)["id"])
        raise redis.ConnectionError("the reply was lost")

    monkeypatch.setattr(services.jobs, "create", written_but_reply_lost)
    client = stack.app.test_client()
    first = client.post("/v1/workflows/greet/execute", json={}, headers=headers)
    monkeypatch.setattr(services.jobs, "create", real)
    retry = client.post("/v1/workflows/greet/execute", json={}, headers=headers)

    assert first.status_code in (202, 503), first.get_json()
    assert retry.status_code in (200, 202), retry.get_json()
    assert retry.get_json()["job"]["id"] == created[0]
    assert services.redis.zcard(keys.job_index("acme")) == 1


def test_a_key_bound_to_a_job_that_was_never_written_is_taken_over(
    isolated_stack, monkeypatch
):
    """The first request bound the key, then Redis went away before the
    job was written and before the key could be released: the retry must
    run the job, not answer 404 for a day."""
    stack, services, headers = _keyed_stack(isolated_stack, "k-orphan")
    real = services.jobs.create

    def redis_gone(*_args, **_job):
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(services.jobs, "create", redis_gone)
    monkeypatch.setattr(services.idempotency, "release", redis_gone)
    client = stack.app.test_client()
    first = client.post("/v1/workflows/greet/execute", json={}, headers=headers)
    monkeypatch.setattr(services.jobs, "create", real)
    retry = client.post("/v1/workflows/greet/execute", json={}, headers=headers)

    assert first.status_code == 503
    assert retry.status_code == 202, retry.get_json()
    job_id = retry.get_json()["job"]["id"]
    assert services.jobs.get("acme", job_id)["status"] == "queued"
    assert _messages_for(stack.redis.client(), job_id) == 1


def test_a_claim_sent_again_by_the_same_claim_still_claims(isolated_stack):
    """A lost reply to the claim used to answer "running" to the retry: the
    worker dropped the job, which then waited out its lease to run again."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    tenant, job_id = "acme", uuid.uuid4().hex
    _create(services, tenant, job_id)

    first = services.jobs.claim(tenant, job_id, "w1/abc")
    again = services.jobs.claim(tenant, job_id, "w1/abc")
    other = services.jobs.claim(tenant, job_id, "w2/def")

    assert first[0] == again[0] == "claimed"
    assert again[1]["attempts"] == 1 and again[1]["worker"] == "w1/abc"
    assert other[1] is None and "running" in other[0]


def test_an_end_sent_again_by_the_same_claim_still_counts_as_its_end(isolated_stack):
    """A lost reply to the end used to answer "already ended" to the retry,
    so the job's webhook was never sent."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    tenant, job_id = "acme", uuid.uuid4().hex
    _create(services, tenant, job_id)
    services.jobs.claim(tenant, job_id, "w1/abc")

    def end():
        return services.jobs.end_run(
            tenant, job_id, JobStatus.SUCCEEDED, owner="w1/abc", fields={}
        )

    assert end() == (True, [])
    assert end() == (True, [])
    events = [e["event"] for _, e in services.jobs.events_since(tenant, job_id, 0)]
    assert events.count("done") == 1
    assert services.jobs.end_run(
        tenant, job_id, JobStatus.FAILED, owner="w2/def", fields={}
    ) == (False, [])


# The rules of packagerepo.idempotency, each against the race an adversarial
# pass found (a proxy that held or swallowed Redis replies).


def _binding(body: str = "b1") -> Binding:
    return Binding("acme", f"k-{uuid.uuid4().hex[:8]}", body)


def test_a_slow_create_that_lands_after_a_take_over_creates_nothing(isolated_stack):
    """A's create was held 2 s; B took the key over at 1 s: both ran."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    binding, a, b = _binding(), uuid.uuid4().hex, uuid.uuid4().hex
    assert services.idempotency.reserve(binding, a) is None
    assert services.idempotency.take_over(binding, a, b) == b

    with pytest.raises(KeyMoved):
        services.jobs.create(
            tenant="acme", workflow="greet", digest="d", input={},
            submitted_by="t", job_id=a, fence=binding.fence(a),
        )  # fmt: skip
    services.jobs.create(
        tenant="acme", workflow="greet", digest="d", input={},
        submitted_by="t", job_id=b, fence=binding.fence(b),
    )  # fmt: skip

    assert services.redis.zcard(keys.job_index("acme")) == 1


def test_a_key_whose_job_exists_is_never_taken_over(isolated_stack):
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    binding, a, b = _binding(), uuid.uuid4().hex, uuid.uuid4().hex
    services.idempotency.reserve(binding, a)
    services.jobs.create(
        tenant="acme", workflow="greet", digest="d", input={},
        submitted_by="t", job_id=a, fence=binding.fence(a),
    )  # fmt: skip

    assert services.idempotency.take_over(binding, a, b) == a


def test_a_key_released_under_a_waiting_retry_is_taken_by_that_retry_alone(
    isolated_stack,
):
    """A failed and released the key while B waited: B took it over without
    binding it, so C's retry found it free and ran a job of its own."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    binding, a, b, c = (_binding(), *(uuid.uuid4().hex for _ in range(3)))
    services.idempotency.reserve(binding, a)
    services.idempotency.release(binding, a)

    assert services.idempotency.take_over(binding, a, b) == b
    assert services.idempotency.reserve(binding, c) == b


def test_a_release_leaves_a_key_that_moved_on_alone(isolated_stack):
    """A's release (GET, then DEL) deleted the binding B had just taken."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    binding, a, b, c = (_binding(), *(uuid.uuid4().hex for _ in range(3)))
    services.idempotency.reserve(binding, a)
    services.idempotency.take_over(binding, a, b)

    services.idempotency.release(binding, a)

    assert services.idempotency.reserve(binding, c) == b


def test_a_take_over_answering_another_body_is_a_reused_key(isolated_stack):
    """The record a take-over answered was used without its body compared:
    a replay with body X got the job of body Y."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    first = _binding("body-y")
    other = Binding(first.tenant, first.key, "body-x")
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    services.idempotency.reserve(first, a)

    with pytest.raises(IdempotencyKeyReused):
        services.idempotency.take_over(other, a, b)


def test_an_anonymous_key_lives_no_longer_than_an_anonymous_job(isolated_stack):
    """Keys lived 24 h, anonymous jobs 5 min: a replay after that ran the job
    again (a new token from auth_login)."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    binding = Binding(keys.ANONYMOUS_TENANT, "k-anon", "b")
    services.idempotency.reserve(binding, uuid.uuid4().hex)

    assert 0 < services.redis.ttl(binding.redis_key) <= keys.ANONYMOUS_JOB_TTL


# Node events are numbered per claim, so a write sent again (redis-py repeats
# a command whose reply was lost; the observer retries a write that failed)
# appends each event once.


def _node(name: str) -> str:
    return event_json("node", {"name": name, "status": "succeeded"})


def _node_names(services, tenant: str, job_id: str) -> list[str]:
    return [
        event["data"]["name"]
        for _, event in services.jobs.events_since(tenant, job_id, 0)
        if event["event"] == "node"
    ]


def _end_with(services, tenant: str, job_id: str, first: int, events: list[str]):
    """End the job as claim ``w1/abc``, with the node events it still held."""
    services.jobs.end_run(
        tenant,
        job_id,
        JobStatus.SUCCEEDED,
        owner="w1/abc",
        fields={},
        node_events=events,
        first_event=first,
    )


def test_node_events_sent_again_are_appended_once(isolated_stack):
    """They were appended twice, with new sequence numbers."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    tenant, job_id = "acme", uuid.uuid4().hex
    _create(services, tenant, job_id)
    services.jobs.claim(tenant, job_id, "w1/abc")
    progress = {"done": 1, "total": 3}

    for _ in range(2):
        services.jobs.record_nodes(
            tenant, job_id, [], progress, [_node("a")], first=1, owner="w1/abc"
        )
    # The end carries "a" again (its write failed as far as the worker
    # knows) and "b"; only "b" is new.
    for _ in range(2):
        _end_with(services, tenant, job_id, 1, [_node("a"), _node("b")])

    assert _node_names(services, tenant, job_id) == ["a", "b"]


def test_a_new_claim_numbers_its_node_events_from_one_again(isolated_stack):
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    tenant, job_id = "acme", uuid.uuid4().hex
    _create(services, tenant, job_id)
    progress = {"done": 1, "total": 1}
    services.jobs.claim(tenant, job_id, "w1/abc")
    services.jobs.record_nodes(
        tenant, job_id, [], progress, [_node("a")], first=1, owner="w1/abc"
    )
    assert services.jobs.requeue(tenant, job_id)  # its lease lapsed

    services.jobs.claim(tenant, job_id, "w2/def")
    services.jobs.record_nodes(
        tenant, job_id, [], progress, [_node("a")], first=1, owner="w2/def"
    )

    assert _node_names(services, tenant, job_id) == ["a", "a"]


def test_node_events_whose_write_failed_are_written_once_later(
    isolated_stack, monkeypatch
):
    """The observer dropped the events of a failed write; and when the write
    had landed (only its reply was lost), writing them again doubled them."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    tenant, job_id = "acme", uuid.uuid4().hex
    _create(services, tenant, job_id)
    services.jobs.claim(tenant, job_id, "w1/abc")
    observer = JobObserver(services, tenant, job_id, owner="w1/abc")
    written = services.jobs.record_nodes

    def reply_lost(*args, **kwargs):
        written(*args, **kwargs)
        raise redis.ConnectionError("the reply was lost")

    observer("node", {"name": "a", "status": "succeeded"})
    monkeypatch.setattr(services.jobs, "record_nodes", reply_lost)
    with pytest.raises(redis.ConnectionError):
        observer.flush(older_than=float("inf"))
    monkeypatch.undo()
    observer("node", {"name": "b", "status": "succeeded"})
    observer.flush(older_than=float("inf"))
    observer("node", {"name": "c", "status": "succeeded"})
    _end_with(services, tenant, job_id, *observer.take_held())

    assert _node_names(services, tenant, job_id) == ["a", "b", "c"]
