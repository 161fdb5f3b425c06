"""The bundled repository workflows through execute, a real worker and
the same storage as the direct endpoints."""

from __future__ import annotations

import base64

import pytest

from repository.coordinates import Coordinate

pytestmark = pytest.mark.integration


def test_a_workflow_publish_records_the_submitting_user(
    client, app, make_user, tenant, worker
):
    auth = make_user(tenant)
    body = {
        "namespace": "acme",
        "name": "tool",
        "version": "1.2.3",
        "variant": "default",
        "content_base64": base64.b64encode(b"payload").decode(),
    }

    response = client.post(
        "/v1/workflows/publish_artifact/execute?wait=20", json=body, headers=auth
    )

    assert response.status_code == 200, response.get_json()
    me = client.get("/auth/me", headers=auth).get_json()["user"]["username"]
    coordinate = Coordinate.parse("acme", "tool", "1.2.3", "default")
    record = app.extensions["packagerepo"].artifacts.record(tenant, coordinate)
    assert record["created_by"] == me


def test_workflow_and_direct_endpoint_agree_on_latest(
    client, make_user, tenant, worker
):
    auth = make_user(tenant)
    for version in ("1.9.0", "1.10.0", "2.0.0-rc.1"):
        put = client.put(
            f"/v1/acme/tool/{version}/default/blob", data=version.encode(), headers=auth
        )
        assert put.status_code == 201

    direct = client.get("/v1/acme/tool/latest", headers=auth).get_json()
    executed = client.post(
        "/v1/workflows/resolve_latest/execute?wait=20",
        json={"namespace": "acme", "name": "tool"},
        headers=auth,
    ).get_json()

    assert executed["result"]["version"] == direct["version"] == "1.10.0"
