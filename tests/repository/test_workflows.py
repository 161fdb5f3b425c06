"""The six bundled workflows and the repo/auth/system nodes, run by the engine.

Each run uses real services: an artifact store on this test's DATA_DIR, real
accounts, and the session's real redis-server for the validation cache.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import uuid
from dataclasses import replace
from pathlib import Path

import jwt
import pytest

from loader import parse_document, validate
from packagerepo.accounts import Identity
from packagerepo.services import BUNDLED_WORKFLOWS, Services
from repository.coordinates import Coordinate
from worker.engine import run_workflow
from worker.nodes.base import Execution

from .conftest import TENANT, build_app
from .test_api import BLOB, a_wheel, fetch, upload

BUNDLED = [
    "auth_login",
    "list_versions",
    "download_artifact",
    "publish_artifact",
    "resolve_latest",
    "server",
]
SCOPES = {
    "auth_login": "none",
    "list_versions": "read",
    "resolve_latest": "read",
    "download_artifact": "read",
    "publish_artifact": "write",
    "server": "admin",
}


@pytest.fixture
def services(repo_settings, redis_server) -> Services:
    return Services(replace(repo_settings, redis_url=redis_server.url))


@pytest.fixture
def run(services):
    """Run a bundled workflow (by name) or a document for ``tenant``."""

    def run_one(workflow: str | dict, job_input: dict, *, tenant: str = TENANT):
        if isinstance(workflow, str):
            path = BUNDLED_WORKFLOWS / f"{workflow}.json"
            workflow = parse_document(path.read_bytes())
        entry = services.cache.validated(tenant, workflow)
        entry.report.raise_for_errors()
        execution = Execution(job_id=uuid.uuid4().hex, tenant=tenant, input=job_input)
        return run_workflow(
            entry.document,
            execution,
            registry=services.registry,
            services=services,
        )

    return run_one


@pytest.fixture
def direct(services):
    """A test client of the direct endpoints on the same services."""
    return build_app(services).test_client()


@pytest.fixture
def bearer(services):
    """A bearer header for a user of ``tenant``, created once per tenant (a
    token speaks for a user that exists as the token says)."""
    users: dict[str, Identity] = {}

    def issue(tenant: str = TENANT) -> dict[str, str]:
        if tenant not in users:
            users[tenant] = services.accounts.add_user(
                f"tester-{tenant}", "pw", tenant=tenant, scopes=["read", "write"]
            )
        token, _ = services.accounts.issue_token(users[tenant])
        return {"Authorization": f"Bearer {token}"}

    return issue


def coordinate(version: str = "1.0.0", **extra) -> dict:
    return {
        "namespace": "acme",
        "name": "tool",
        "version": version,
        "variant": "default",
        **extra,
    }


def encoded(content: bytes) -> str:
    return base64.b64encode(content).decode()


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundled_workflow_validates_without_errors_or_warnings(name):
    document = parse_document((BUNDLED_WORKFLOWS / f"{name}.json").read_bytes())

    report = validate(document)

    assert report.to_dict() == {"valid": True, "errors": [], "warnings": []}
    assert document["settings"]["scope"] == SCOPES[name]


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundled_workflow_branches_or_routes_errors(name):
    document = json.loads((BUNDLED_WORKFLOWS / f"{name}.json").read_text())
    connections = document["connections"].values()

    assert any("error" in outputs for outputs in connections)
    for node in document["nodes"]:
        wired = "error" in document["connections"].get(node["name"], {})
        assert wired == (node.get("onError") == "continueErrorOutput")


def test_a_real_package_published_by_workflow_downloads_byte_identical(
    run, direct, bearer
):
    content = a_wheel().read_bytes()

    outcome = run("publish_artifact", coordinate(content_base64=encoded(content)))
    downloaded = fetch(direct, BLOB.format(version="1.0.0"), bearer())

    assert outcome.status == "succeeded", outcome.error
    assert outcome.result["digest"] == "sha256:" + hashlib.sha256(content).hexdigest()
    assert outcome.result["size"] == len(content)
    assert downloaded.data == content


def test_a_package_published_directly_is_located_by_the_download_workflow(
    run, direct, bearer
):
    content = a_wheel().read_bytes()
    published = upload(direct, "1.0.0", content, bearer()).json

    outcome = run("download_artifact", coordinate())
    downloaded = fetch(direct, outcome.result["download_url"], bearer())

    assert outcome.status == "succeeded", outcome.error
    assert outcome.result == {
        "digest": published["digest"],
        "size": len(content),
        "download_url": BLOB.format(version="1.0.0"),
        "version": "1.0.0",
    }
    assert downloaded.data == content


def test_download_without_a_version_locates_the_latest_release(run):
    for version in ["1.9.0", "1.10.0", "2.0.0-rc.1"]:
        run("publish_artifact", coordinate(version, content_base64=encoded(b"v")))

    outcome = run(
        "download_artifact", {"namespace": "acme", "name": "tool", "variant": "default"}
    )

    assert outcome.status == "succeeded", outcome.error
    assert outcome.result["version"] == "1.10.0"


def test_download_without_a_version_takes_the_latest_release_of_its_variant(run):
    """Found by a fresh user: a newer release of another variant made the
    download fail NOT_FOUND although an older one had the variant."""
    linux = {"variant": "linux-amd64"}
    run("publish_artifact", coordinate("1.0.0", content_base64=encoded(b"l"), **linux))
    run("publish_artifact", coordinate("3.0.1", content_base64=encoded(b"d")))

    outcome = run(
        "download_artifact",
        {"namespace": "acme", "name": "tool", "variant": "linux-amd64"},
    )

    assert outcome.status == "succeeded", outcome.error
    assert outcome.result["version"] == "1.0.0"


def test_download_of_a_missing_artifact_fails_not_found(run):
    outcome = run("download_artifact", coordinate("9.9.9"))

    assert outcome.status == "failed"
    assert (outcome.error["code"], outcome.http_status) == ("NOT_FOUND", 404)


def test_publishing_an_existing_coordinate_fails_already_exists(run):
    first = run("publish_artifact", coordinate(content_base64=encoded(b"one")))

    second = run("publish_artifact", coordinate(content_base64=encoded(b"two")))

    assert first.status == "succeeded"
    assert second.status == "failed"
    assert (second.error["code"], second.http_status) == ("ALREADY_EXISTS", 409)


def test_publishing_by_the_digest_of_a_stored_blob(run, services):
    digest, size = services.artifacts.put_blob(
        TENANT, io.BytesIO(b"stored"), max_bytes=100
    )

    outcome = run("publish_artifact", coordinate(digest=digest))

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.result["digest"], outcome.result["size"]) == (digest, size)


def test_publishing_an_unknown_digest_fails_not_found(run):
    outcome = run("publish_artifact", coordinate(digest="sha256:" + "0" * 64))

    assert (outcome.status, outcome.error["code"]) == ("failed", "NOT_FOUND")


def test_a_declared_digest_that_does_not_match_fails(run, services):
    job_input = coordinate(
        content_base64=encoded(b"content"), digest="sha256:" + "1" * 64
    )

    outcome = run("publish_artifact", job_input)

    assert (outcome.error["code"], outcome.http_status) == ("DIGEST_MISMATCH", 400)
    published = Coordinate.parse("acme", "tool", "1.0.0", "default")
    assert not services.artifacts.exists(TENANT, published)


def test_content_over_the_upload_limit_fails_blob_too_large(run, services):
    # The job input itself is bounded by MAX_BODY_BYTES, so the upload limit
    # that bites here is set low.
    services.settings = replace(services.settings, max_upload_bytes=1000)

    outcome = run("publish_artifact", coordinate(content_base64=encoded(b"x" * 1001)))

    assert (outcome.error["code"], outcome.http_status) == ("BLOB_TOO_LARGE", 413)


def test_content_exactly_at_the_upload_limit_is_published(run, services):
    services.settings = replace(services.settings, max_upload_bytes=1000)

    outcome = run("publish_artifact", coordinate(content_base64=encoded(b"x" * 1000)))

    assert outcome.result["size"] == 1000


def test_bad_base64_fails_as_an_invalid_request(run):
    outcome = run("publish_artifact", coordinate(content_base64="not base64!"))

    assert (outcome.error["code"], outcome.http_status) == ("INVALID_REQUEST", 400)


@pytest.mark.parametrize(
    "hostile", [{"name": "../../etc"}, {"namespace": ".."}, {"variant": "a\\b"}]
)
def test_hostile_coordinates_fail_as_validation_errors(run, hostile, data_dir):
    before = sorted(data_dir.parent.rglob("*"))

    outcome = run(
        "publish_artifact", {**coordinate(content_base64=encoded(b"x")), **hostile}
    )

    assert (outcome.error["code"], outcome.http_status) == ("VALIDATION_ERROR", 400)
    assert sorted(data_dir.parent.rglob("*")) == before


def test_list_and_latest_workflows_answer_like_the_direct_endpoints(
    run, direct, bearer
):
    for version in ["1.9.0", "1.10.0", "1.10.0-rc.1", "1.0.0-rc.2"]:
        upload(direct, version, version.encode(), bearer())
    package = {"namespace": "ACME", "name": "Tool"}

    for workflow, path in [
        ("list_versions", "/v1/acme/tool/versions"),
        ("resolve_latest", "/v1/acme/tool/latest"),
    ]:
        outcome = run(workflow, package)
        answer = fetch(direct, path, bearer()).json
        answer.pop("ok")
        assert outcome.result == answer


def test_resolve_latest_of_a_variant_answers_like_the_direct_endpoint(
    run, direct, bearer
):
    upload(direct, "1.0.0", b"a", bearer())
    run(
        "publish_artifact",
        coordinate("2.0.0", content_base64=encoded(b"b"), variant="x"),
    )

    outcome = run(
        "resolve_latest", {"namespace": "acme", "name": "tool", "variant": "default"}
    )
    answer = fetch(direct, "/v1/acme/tool/latest?variant=default", bearer()).json
    answer.pop("ok")
    hostile = run(
        "resolve_latest", {"namespace": "acme", "name": "tool", "variant": "../x"}
    )

    assert outcome.result == answer
    assert answer["version"] == "1.0.0"
    assert (hostile.status, hostile.error["code"]) == ("failed", "VALIDATION_ERROR")


def test_resolve_latest_includes_prereleases_only_when_asked(run):
    run("publish_artifact", coordinate("2.0.0-rc.1", content_base64=encoded(b"a")))

    plain = run("resolve_latest", {"namespace": "acme", "name": "tool"})
    asked = run(
        "resolve_latest", {"namespace": "acme", "name": "tool", "prerelease": True}
    )

    assert (plain.error["code"], plain.http_status) == ("NOT_FOUND", 404)
    assert asked.result["version"] == "2.0.0-rc.1"


def test_workflows_keep_tenants_apart(run):
    run("publish_artifact", coordinate(content_base64=encoded(b"a")), tenant="alpha")

    listed = run("list_versions", {"namespace": "acme", "name": "tool"}, tenant="beta")
    located = run("download_artifact", coordinate(), tenant="beta")

    assert listed.error["code"] == "NOT_FOUND"
    assert located.error["code"] == "NOT_FOUND"


def test_login_workflow_issues_a_token_for_good_credentials(run, services):
    services.accounts.add_user("alice", "s3cret", tenant="acme", scopes=["read"])

    outcome = run("auth_login", {"username": "alice", "password": "s3cret"})

    assert outcome.status == "succeeded", outcome.error
    assert outcome.result["user"] == {
        "username": "alice",
        "tenant": "acme",
        "scopes": ["read"],
    }
    assert outcome.result["expires_in"] == services.settings.jwt_ttl_seconds
    identity = services.accounts.decode_token(outcome.result["token"])
    assert (identity.username, identity.tenant) == ("alice", "acme")
    assert set(outcome.result) == {"token", "expires_in", "user"}


@pytest.mark.parametrize(
    "job_input",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": "s3cret"},
        {"username": "alice"},
        {},
    ],
)
def test_login_workflow_refuses_bad_credentials_as_unauthorized(
    run, services, job_input
):
    services.accounts.add_user("alice", "s3cret", tenant="acme", scopes=["read"])

    outcome = run("auth_login", job_input)

    assert outcome.status == "failed"
    assert (outcome.error["code"], outcome.http_status) == ("UNAUTHORIZED", 401)


def a_document(*nodes: tuple[str, str, dict]) -> dict:
    """A linear workflow of ``(name, type, parameters)`` nodes after a start."""
    chain = [("Start", "trigger.start", {}), *nodes]
    return {
        "id": "test",
        "name": "test",
        "nodes": [
            {
                "id": str(index),
                "name": name,
                "type": node_type,
                "typeVersion": 1,
                "position": [index * 200, 0],
                "parameters": parameters,
            }
            for index, (name, node_type, parameters) in enumerate(chain)
        ],
        "connections": {
            source[0]: {"main": [[{"node": target[0], "type": "main", "index": 0}]]}
            for source, target in itertools.pairwise(chain)
        },
    }


def test_issue_token_refuses_an_identity_that_was_not_verified(run):
    forged = a_document(
        (
            "Forge",
            "data.set",
            {
                "values": {
                    "username": "admin",
                    "tenant": "acme",
                    "scopes": "{{ ['admin'] }}",
                }
            },
        ),
        ("Issue Token", "auth.issue_token", {}),
    )

    outcome = run(forged, {})

    assert (outcome.error["code"], outcome.http_status) == ("UNAUTHORIZED", 401)


def test_a_proof_from_another_job_does_not_issue_a_token(run, services):
    services.accounts.add_user("alice", "s3cret", tenant="acme", scopes=["read"])
    verify = a_document(
        (
            "Verify",
            "auth.verify_password",
            {"username": "alice", "password": "s3cret"},
        )
    )
    verified = run(verify, {}).result[0]
    replay = a_document(
        ("Replay", "data.set", {"values": {"proof": verified["proof"]}}),
        ("Issue Token", "auth.issue_token", {}),
    )

    outcome = run(replay, {"username": "alice", "tenant": "acme", "scopes": ["read"]})

    assert outcome.error["code"] == "UNAUTHORIZED"


def test_verify_token_and_require_scope_check_a_bearer_token(run, services):
    bob = services.accounts.add_user("bob", "pw", tenant="acme", scopes=["read"])
    token, _ = services.accounts.issue_token(bob)
    document = a_document(
        ("Verify Token", "auth.verify_token", {"token": "{{ $input.token }}"}),
        (
            "Require Write",
            "auth.require_scope",
            {"scope": "write", "scopes": "{{ $json.scopes }}"},
        ),
    )

    refused = run(document, {"token": token})
    forged = run(document, {"token": jwt.encode({"sub": "x"}, "k" * 32)})

    assert (refused.error["code"], refused.http_status) == ("FORBIDDEN", 403)
    assert forged.error["code"] == "UNAUTHORIZED"


def test_the_server_workflow_reports_every_check_and_warms_the_cache(run, services):
    outcome = run("server", {})

    assert outcome.status == "succeeded", outcome.error
    report = outcome.result
    assert report["ready"] is True
    assert report["storage"]["ok"] and report["redis"]["ok"]
    assert report["registry"]["digest"] == services.registry.digest
    assert report["registry"]["unimplemented"] == []
    workflows = {entry["name"]: entry for entry in report["workflows"]["workflows"]}
    assert set(BUNDLED) <= set(workflows)
    for name in BUNDLED:
        assert (workflows[name]["valid"], workflows[name]["warnings"]) == (True, 0)
        fresh = Services(services.settings)
        assert fresh.cache.fetch(TENANT, workflows[name]["digest"]) is not None


def test_the_server_workflow_reports_not_ready_when_redis_is_down(
    services, repo_settings
):
    broken = Services(repo_settings)  # its Redis URL points at a closed port
    document = parse_document((BUNDLED_WORKFLOWS / "server.json").read_bytes())
    execution = Execution(job_id="j", tenant=TENANT, input={})

    outcome = run_workflow(
        document, execution, registry=broken.registry, services=broken
    )

    assert outcome.status == "succeeded", outcome.error
    assert outcome.result["ready"] is False
    assert outcome.result["redis"]["ok"] is False


def test_bundled_workflow_files_are_exactly_the_six(tmp_path: Path):
    names = {path.stem for path in BUNDLED_WORKFLOWS.glob("*.json")}

    assert set(BUNDLED) <= names
