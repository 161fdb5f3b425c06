"""The workflow endpoints through Flask's test client, on a real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.loader.conftest import fixture_paths, noop_nodes


@pytest.fixture(scope="module")
def workflows_client(settings):
    from api import create_app
    from api.workflows import workflows_bp

    app = create_app(settings)
    if "workflows" not in app.blueprints:
        app.register_blueprint(workflows_bp)
    app.config["TESTING"] = True
    return app.test_client()


def _document(name: str = "linear") -> dict[str, Any]:
    path = next(path for path in fixture_paths("valid") if path.stem == name)
    return json.loads(path.read_text())


def _codes(problems: list[dict]) -> list[str]:
    return [problem["code"] for problem in problems]


def test_validate_answers_a_valid_report(workflows_client, auth) -> None:
    response = workflows_client.post(
        "/v1/workflows/validate", json=_document(), headers=auth
    )

    assert response.status_code == 200
    assert response.json == {
        "ok": True,
        "report": {"valid": True, "errors": [], "warnings": []},
    }


def test_validate_answers_200_with_the_problems_of_an_invalid_document(
    workflows_client, auth
) -> None:
    document = _document()
    document["nodes"][1]["type"] = "data.nothing"

    response = workflows_client.post(
        "/v1/workflows/validate", json=document, headers=auth
    )

    assert response.status_code == 200
    assert response.json["report"]["valid"] is False
    assert _codes(response.json["report"]["errors"]) == ["UNKNOWN_NODE_TYPE"]


def test_validate_strict_fails_on_warnings(workflows_client, auth) -> None:
    document = _document()
    document["comment"] = "a field nobody knows"

    lenient = workflows_client.post(
        "/v1/workflows/validate", json=document, headers=auth
    )
    strict = workflows_client.post(
        "/v1/workflows/validate?strict=true", json=document, headers=auth
    )

    assert lenient.json["report"]["valid"] is True
    assert strict.json["report"]["valid"] is False


def test_validate_refuses_an_unparseable_body_as_invalid_workflow(
    workflows_client, auth
) -> None:
    response = workflows_client.post(
        "/v1/workflows/validate",
        data=b'{"name": "a", "name": "b"}',
        headers={**auth, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json["error"]["code"] == "INVALID_WORKFLOW"
    assert _codes(response.json["error"]["details"]) == ["DUPLICATE_KEY"]


def test_validate_needs_a_token_and_a_json_body(workflows_client, auth) -> None:
    anonymous = workflows_client.post("/v1/workflows/validate", json=_document())
    as_text = workflows_client.post("/v1/workflows/validate", data="{}", headers=auth)

    assert anonymous.status_code == 401
    assert as_text.status_code == 415


def test_a_registered_workflow_is_listed_and_read_back(workflows_client, auth) -> None:
    put = workflows_client.put("/v1/workflows/nightly", json=_document(), headers=auth)
    again = workflows_client.put(
        "/v1/workflows/nightly", json=_document(), headers=auth
    )
    listed = workflows_client.get("/v1/workflows", headers=auth)
    read = workflows_client.get("/v1/workflows/nightly", headers=auth)

    assert (put.status_code, again.status_code) == (201, 200)
    entry = next(item for item in listed.json["workflows"] if item["name"] == "nightly")
    assert entry["source"] == "tenant"
    assert entry["valid"] is True
    assert entry["digest"] == put.json["digest"]
    assert read.json["definition"] == _document()
    assert read.json["report"] == {"valid": True, "errors": [], "warnings": []}


def test_the_listing_shows_the_bundled_workflows_as_valid(
    workflows_client, auth
) -> None:
    listed = workflows_client.get("/v1/workflows", headers=auth).json["workflows"]

    bundled = {item["name"]: item for item in listed if item["source"] == "bundled"}
    assert {"auth_login", "publish_artifact", "server"} <= set(bundled)
    assert all(item["valid"] and item["warnings"] == 0 for item in bundled.values())


def test_another_tenant_cannot_see_or_read_a_tenants_workflow(
    workflows_client, auth, make_user
) -> None:
    workflows_client.put("/v1/workflows/secret-flow", json=_document(), headers=auth)
    outsider = make_user("outsider-tenant")

    listed = workflows_client.get("/v1/workflows", headers=outsider)
    read = workflows_client.get("/v1/workflows/secret-flow", headers=outsider)

    assert "secret-flow" not in [item["name"] for item in listed.json["workflows"]]
    assert read.status_code == 404
    assert read.json["error"]["code"] == "WORKFLOW_NOT_FOUND"


def test_registering_an_invalid_workflow_is_a_validation_error_with_details(
    workflows_client, auth
) -> None:
    document = _document()
    document["connections"]["Set Fields"]["main"][0].append(
        {"node": "Start", "type": "main", "index": 0}
    )

    response = workflows_client.put("/v1/workflows/loopy", json=document, headers=auth)

    assert response.status_code == 400
    assert response.json["error"]["code"] == "WORKFLOW_VALIDATION_ERROR"
    assert response.json["error"]["message"] == "Workflow validation failed: 1 error(s)"
    assert "CYCLE" in _codes(response.json["error"]["details"])
    missing = workflows_client.get("/v1/workflows/loopy", headers=auth)
    assert missing.status_code == 404


def test_registering_for_another_tenant_id_is_refused(workflows_client, auth) -> None:
    document = _document()
    document["tenantId"] = "somebody-else"

    response = workflows_client.put("/v1/workflows/theirs", json=document, headers=auth)

    assert response.status_code == 400
    assert _codes(response.json["error"]["details"]) == ["TENANT_MISMATCH"]


def test_bundled_names_are_read_only(workflows_client, auth) -> None:
    response = workflows_client.put(
        "/v1/workflows/auth_login", json=_document(), headers=auth
    )

    assert response.status_code == 403
    assert response.json["error"]["code"] == "FORBIDDEN"


def test_registering_needs_the_write_scope(workflows_client, make_user) -> None:
    reader = make_user("readers-only", scopes=("read",))

    response = workflows_client.put(
        "/v1/workflows/mine", json=_document(), headers=reader
    )

    assert response.status_code == 403


@pytest.mark.parametrize("name", ["Bad.Name", "..", "-x", "%2e%2e%2fusers"])
def test_unsafe_workflow_names_are_refused(workflows_client, auth, name) -> None:
    response = workflows_client.put(
        f"/v1/workflows/{name}", json=_document(), headers=auth
    )

    assert response.status_code in (400, 404)
    assert response.json["ok"] is False


def test_an_unknown_workflow_is_not_found(workflows_client, auth) -> None:
    response = workflows_client.get("/v1/workflows/does-not-exist", headers=auth)

    assert response.status_code == 404
    assert response.json["error"]["code"] == "WORKFLOW_NOT_FOUND"


def _dense_dag(count: int) -> dict[str, Any]:
    """``count`` nodes, each wired to every later one: many small connections."""
    nodes = noop_nodes(count)
    connections = {
        f"N{i}": {
            "main": [
                [
                    {"node": f"N{j}", "type": "main", "index": 0}
                    for j in range(i + 1, count)
                ]
            ]
        }
        for i in range(count - 1)
    }
    return {"id": "dense", "name": "dense", "nodes": nodes, "connections": connections}


def _put_raw(client, name: str, raw: str, auth: dict):
    headers = {**auth, "Content-Type": "application/json"}
    return client.put(f"/v1/workflows/{name}", data=raw.encode(), headers=headers)


def test_a_compact_workflow_too_large_once_indented_still_reads_back(
    workflows_client, auth
) -> None:
    from loader.document import MAX_BYTES

    document = _dense_dag(150)
    compact = json.dumps(document, separators=(",", ":"))
    assert len(compact) < MAX_BYTES < len(json.dumps(document, indent=2))

    put = _put_raw(workflows_client, "dense", compact, auth)
    read = workflows_client.get("/v1/workflows/dense", headers=auth)
    listed = workflows_client.get("/v1/workflows", headers=auth)

    assert put.status_code == 201
    assert read.status_code == 200
    assert read.json["definition"] == document
    entry = next(item for item in listed.json["workflows"] if item["name"] == "dense")
    assert entry["valid"] is True


def test_a_workflow_whose_stored_form_would_pass_the_limit_is_refused_at_put(
    workflows_client, auth
) -> None:
    from loader.document import MAX_BYTES

    # 1e9 is three characters as sent and twelve (1000000000.0) as stored.
    document = _document()
    document["meta"] = {"samples": "SAMPLES"}
    raw = json.dumps(document).replace(
        '"SAMPLES"', "[" + ",".join(["1e9"] * 200_000) + "]"
    )
    assert len(raw) < MAX_BYTES

    put = _put_raw(workflows_client, "swollen", raw, auth)
    read = workflows_client.get("/v1/workflows/swollen", headers=auth)
    listed = workflows_client.get("/v1/workflows", headers=auth)

    assert put.status_code == 400
    assert put.json["error"]["code"] == "INVALID_WORKFLOW"
    assert _codes(put.json["error"]["details"]) == ["DOCUMENT_TOO_LARGE"]
    assert read.status_code == 404
    assert listed.status_code == 200
