"""Bundled workflows through execute → a real Celery worker → result.

Uses the session's real redis-server and worker process (``tests/conftest``)
and an API built on the same settings, so the direct endpoints and the
worker share one DATA_DIR.
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
from dataclasses import replace

import pytest

from packagerepo.services import Services

from .conftest import build_app
from .test_api import a_wheel, fetch
from .uploaders import upload_in_child

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack_api(settings):
    """The API with the artifact routes and room for a base64 wheel in JSON."""
    roomy = replace(settings, max_body_bytes=8 * 1024 * 1024)
    application = build_app(Services(roomy))
    application.config["TESTING"] = True
    return application.test_client()


def execute(api, name: str, body: dict, headers: dict | None = None):
    return api.post(
        f"/v1/workflows/{name}/execute?wait=30", json=body, headers=headers or {}
    )


def blob_path(version: str) -> str:
    return f"/v1/acme/wheel/{version}/py3-none-any/blob"


def test_a_wheel_published_by_workflow_downloads_byte_identical(
    stack_api, auth, worker
):
    content = a_wheel().read_bytes()
    body = {
        "namespace": "acme",
        "name": "wheel",
        "version": "1.0.0",
        "variant": "py3-none-any",
        "content_base64": base64.b64encode(content).decode(),
    }

    published = execute(stack_api, "publish_artifact", body, auth)
    located = execute(
        stack_api, "download_artifact", {**body, "content_base64": None}, auth
    )
    downloaded = fetch(stack_api, located.json["result"]["download_url"], auth)

    assert published.status_code == 200, published.json
    assert published.json["result"]["digest"] == (
        "sha256:" + hashlib.sha256(content).hexdigest()
    )
    assert located.json["result"]["size"] == len(content)
    assert downloaded.data == content


def test_a_wheel_published_directly_is_found_by_the_workflows(stack_api, auth, worker):
    content = a_wheel().read_bytes()
    published = stack_api.put(blob_path("2.0.0"), data=content, headers=auth)

    located = execute(
        stack_api,
        "download_artifact",
        {"namespace": "acme", "name": "wheel", "variant": "py3-none-any"},
        auth,
    )
    listed = execute(
        stack_api, "list_versions", {"namespace": "acme", "name": "wheel"}, auth
    )
    direct = fetch(stack_api, "/v1/acme/wheel/versions", auth).json

    assert published.status_code == 201
    assert located.json["result"]["digest"] == published.json["digest"]
    assert (
        fetch(stack_api, located.json["result"]["download_url"], auth).data == content
    )
    assert listed.json["result"]["versions"] == direct["versions"]


def test_publishing_an_existing_coordinate_by_workflow_fails_409(
    stack_api, auth, worker
):
    body = {
        "namespace": "acme",
        "name": "once",
        "version": "1.0.0",
        "variant": "default",
        "content_base64": base64.b64encode(b"first").decode(),
    }
    execute(stack_api, "publish_artifact", body, auth)

    again = execute(stack_api, "publish_artifact", body, auth)

    assert again.status_code == 409
    assert again.json["error"]["code"] == "ALREADY_EXISTS"
    assert again.json["job"]["status"] == "failed"


def test_login_workflow_answers_a_token_and_refuses_bad_passwords(
    stack_api, app, worker, tenant
):
    accounts = app.extensions["packagerepo"].accounts
    accounts.add_user("carol", "correct horse", tenant=tenant, scopes=["read"])

    good = execute(
        stack_api, "auth_login", {"username": "carol", "password": "correct horse"}
    )
    bad = execute(stack_api, "auth_login", {"username": "carol", "password": "nope"})

    assert good.status_code == 200, good.json
    assert good.json["result"]["user"]["tenant"] == tenant
    assert accounts.decode_token(good.json["result"]["token"]).username == "carol"
    assert bad.status_code == 401
    assert bad.json["error"]["code"] == "UNAUTHORIZED"


def test_publish_workflow_needs_the_write_scope(stack_api, make_user, tenant, worker):
    reader = make_user(tenant, ("read",))

    response = execute(stack_api, "publish_artifact", {}, reader)

    assert response.status_code == 403


def test_ten_concurrent_publishes_of_one_coordinate_give_one_201_and_nine_409(
    settings, auth
):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(10)
    results = context.Queue()
    children = [
        context.Process(
            target=upload_in_child,
            args=(
                settings,
                auth,
                blob_path("3.0.0"),
                f"c{i}".encode(),
                barrier,
                results,
            ),
        )
        for i in range(10)
    ]
    for child in children:
        child.start()
    statuses = sorted(results.get(timeout=120) for _ in children)
    for child in children:
        child.join(timeout=60)

    assert statuses == [201] + [409] * 9


def test_twenty_concurrent_publishes_of_different_versions_are_all_listed(
    settings, auth, stack_api
):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(20)
    results = context.Queue()
    versions = [f"4.{i}.0" for i in range(20)]
    children = [
        context.Process(
            target=upload_in_child,
            args=(settings, auth, blob_path(v), v.encode(), barrier, results),
        )
        for v in versions
    ]
    for child in children:
        child.start()
    statuses = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)

    listed = fetch(stack_api, "/v1/acme/wheel/versions", auth).json["versions"]
    assert statuses == [201] * 20
    assert [v for v in listed if v.startswith("4.")] == versions
