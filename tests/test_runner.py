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

    JobRunner(services, "test:1", lambda _job: None, lambda _job: None).run(job["id"])

    ended = services.jobs.get(tenant, job["id"])
    assert ended["status"] == "failed"
    assert ended["error"]["code"] == "WORKFLOW_ERROR"
    assert [(n["name"], n["status"]) for n in ended["nodes"]] == [("Start", "failed")]
