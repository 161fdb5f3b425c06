"""The task wrapper in process, on the real Redis of the test session."""

from __future__ import annotations

import pytest

from packagerepo.services import Services
from worker.runner import JobRunner

pytestmark = pytest.mark.integration


def test_an_unexpected_engine_error_leaves_no_node_recorded_as_running(
    settings, workflows, monkeypatch
):
    tenant = workflows
    import worker.engine

    def explode(document, execution, *, observer, **_options):
        record = {"name": "Start", "type": "trigger.start", "status": "running"}
        observer("node", record)
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(worker.engine, "run_workflow", explode)
    services = Services(settings)
    validated = services.cache.validated_file(services.catalog, tenant, "greet")
    job = services.jobs.create(
        tenant=tenant,
        workflow="greet",
        digest=validated.digest,
        input={},
        submitted_by="test",
    )

    JobRunner(services, "test:1", lambda *_job: None, lambda _job: None).run(job["id"])

    ended = services.jobs.get(tenant, job["id"])
    assert ended["status"] == "failed"
    assert ended["error"]["code"] == "WORKFLOW_ERROR"
    assert [(n["name"], n["status"]) for n in ended["nodes"]] == [("Start", "failed")]


def _queued_greet(services, tenant):
    validated = services.cache.validated_file(services.catalog, tenant, "greet")
    return services.jobs.create(
        tenant=tenant,
        workflow="greet",
        digest=validated.digest,
        input={"name": "Ada"},
        submitted_by="test",
    )


def _runner(services):
    return JobRunner(services, "test:1", lambda *_job: None, lambda _job: None)


def test_a_message_carrying_its_tenant_runs_without_looking_it_up(
    settings, workflows, monkeypatch
):
    tenant = workflows
    services = Services(settings)
    job = _queued_greet(services, tenant)

    def no_lookup(_job_id):
        raise AssertionError("the tenant came with the message")

    monkeypatch.setattr(services.jobs, "tenant_of", no_lookup)
    _runner(services).run(job["id"], tenant)

    assert services.jobs.get(tenant, job["id"])["status"] == "succeeded"


def test_a_message_naming_the_wrong_tenant_leaves_the_job_alone(settings, workflows):
    tenant = workflows
    services = Services(settings)
    job = _queued_greet(services, tenant)

    _runner(services).run(job["id"], "someone-else")

    assert services.jobs.get(tenant, job["id"])["status"] == "queued"
    _runner(services).run(job["id"])  # a message of the old form: id only
    assert services.jobs.get(tenant, job["id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("job_id", "tenant"), [(["j"], None), ("j", ["acme"]), ({"a": 1}, "acme")]
)
def test_a_malformed_execute_message_is_dropped_without_a_traceback(
    monkeypatch, caplog, job_id, tenant
):
    """Found by an adversarial pass: a forged message whose tenant was a
    list raised a redis DataError with a traceback in the worker."""
    import worker.tasks

    def no_runner(*_args):
        raise AssertionError("a malformed message reached the runner")

    monkeypatch.setattr(worker.tasks, "current_runner", no_runner)
    worker.tasks.execute.run(job_id, tenant)

    assert "malformed execute message was dropped" in caplog.text


def test_a_job_whose_end_meets_a_redis_restart_still_ends_once_redis_is_back(
    settings, workflows, monkeypatch
):
    """Found by an adversarial pass: a 2 s Redis restart made the end fail
    after one quick retry; the job stayed running until its lease lapsed,
    then ran again."""
    import redis

    tenant = workflows
    services = Services(settings)
    job = _queued_greet(services, tenant)
    real_end = services.jobs.end_run
    failures: list[int] = []

    def restarting(*args, **kwargs):
        if len(failures) < 3:
            failures.append(1)
            raise redis.ConnectionError("Redis is restarting")
        return real_end(*args, **kwargs)

    monkeypatch.setattr(services.jobs, "end_run", restarting)
    _runner(services).run(job["id"], tenant)

    ended = services.jobs.get(tenant, job["id"])
    assert len(failures) == 3
    assert ended["status"] == "succeeded" and ended["attempts"] == 1


def test_a_cancel_check_that_cannot_reach_redis_goes_on_and_says_so_once(caplog):
    import redis

    from worker.runner import CancelCheck

    class Unreachable:
        calls = 0

        def cancel_requested(self, _tenant, _job_id):
            Unreachable.calls += 1
            raise redis.ConnectionError("Redis is down")

    class FakeServices:
        jobs = Unreachable()

    check = CancelCheck(FakeServices(), "acme", "job-1")
    check._checked_at -= 1  # as if the first interval had passed
    answers = [check() for _ in range(50)]

    assert answers == [False] * 50
    assert Unreachable.calls == 1  # then it pauses before asking again
    assert caplog.text.count("cannot tell whether it was cancelled") == 1


def test_jobs_of_one_cached_workflow_share_the_graph_built_for_the_first(
    settings, workflows, monkeypatch
):
    import worker.runner

    tenant = workflows
    services = Services(settings)
    built = []
    original = worker.runner.WorkflowGraph.from_document

    def counting(document):
        built.append(document)
        return original(document)

    monkeypatch.setattr(worker.runner.WorkflowGraph, "from_document", counting)
    jobs = [_queued_greet(services, tenant) for _ in range(3)]
    for job in jobs:
        _runner(services).run(job["id"], tenant)

    assert len(built) == 1
    ended = [services.jobs.get(tenant, job["id"]) for job in jobs]
    assert [job["result"] for job in ended] == [ended[0]["result"]] * 3
    assert ended[0]["status"] == "succeeded"
