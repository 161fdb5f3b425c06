"""The OpenAPI 3.1 document describes every route, and the live API (real
Redis, real worker) keeps to it under schemathesis's generated requests."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from api.openapi import OPERATIONS, openapi_path, routes

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 15
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def test_every_registered_route_is_in_the_spec(app, client):
    spec = client.get("/openapi.json").get_json()

    missing = [
        (rule, method)
        for rule, method in sorted(routes(app))
        if method.lower() not in spec["paths"].get(openapi_path(rule), {})
    ]

    assert spec["openapi"] == "3.1.0"
    assert missing == []


def test_the_spec_names_only_routes_the_app_serves(app, client):
    spec = client.get("/openapi.json").get_json()
    served = {(openapi_path(rule), method.lower()) for rule, method in routes(app)}

    described = {
        (path, method) for path, item in spec["paths"].items() for method in item
    }

    assert described <= served
    assert len(OPERATIONS) >= len(described)


def test_flask_rules_become_openapi_templates():
    assert openapi_path("/v1/jobs/<job_id>") == "/v1/jobs/{job_id}"
    assert openapi_path("/files/<path:rest>/x") == "/files/{rest}/x"


def test_the_live_api_keeps_to_its_spec(app, worker, make_user):
    api_schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # Everything a tenant can do, in a tenant of its own.
    headers = make_user("schemathesis", ("read", "write"))
    operations = [result.ok() for result in api_schema.get_all_operations()]

    for operation in operations:
        conforms(operation, headers)

    # Every route was exercised; schemathesis leaves out the schema's own URL.
    assert len(operations) == len(routes(app)) - 1


def conforms(operation, headers: dict[str, str]) -> None:
    """Send generated requests to ``operation``; raise on the first breach."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
