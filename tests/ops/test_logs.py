"""Logs of the live service (``LOG_FORMAT=json``): one JSON object per line,
the request id carried from the API into the worker's lines for the job, and
no token, password or blob content anywhere."""

from __future__ import annotations

import base64
import json
import logging
import uuid

import pytest
import requests

from packagerepo.logs import configure_logging, log_context

pytestmark = pytest.mark.integration


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_login_execute_publish_sequence_logs_no_secret(live, live_tenant):
    username, password = live.add_user(live_tenant)
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    blob = f"blob-secret-{uuid.uuid4().hex}".encode()

    login = requests.post(
        f"{live.url}/auth/login",
        json={"username": username, "password": password},
        timeout=10,
    )
    token = login.json()["token"]
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}
    executed = requests.post(
        f"{live.url}/v1/workflows/publish_artifact/execute?wait=20",
        json={
            "namespace": "acme",
            "name": "logged",
            "version": "1.0.0",
            "variant": "any",
            "content_base64": base64.b64encode(blob).decode(),
        },
        headers=headers,
        timeout=30,
    )
    published = requests.put(
        f"{live.url}/v1/acme/logged/2.0.0/any/blob",
        data=blob,
        headers=headers,
        timeout=10,
    )
    assert login.status_code == 200
    assert executed.status_code == 200, executed.text
    assert executed.headers["X-Request-ID"] == request_id
    assert published.status_code == 201, published.text
    job_id = executed.json()["job"]["id"]

    logs = live.worker.log_path.read_text() + live.api.log_path.read_text()

    for secret in (token, password, blob.decode(), base64.b64encode(blob).decode()):
        assert secret not in logs
    job_lines = [line for line in json_lines(logs) if line.get("job") == job_id]
    assert job_lines, "the worker wrote no line for the job"
    assert {line.get("request_id") for line in job_lines} == {request_id}
    assert all(line["tenant"] == live_tenant for line in job_lines)
    assert {"time", "level", "logger", "message"} <= job_lines[0].keys()
    assert any(line.get("node") == "Put Blob" for line in job_lines)


def test_json_lines_carry_the_context_of_the_block(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json", "INFO")
        with log_context(tenant="acme", job="j1", request_id="r1"):
            logging.getLogger("packagerepo.test").info("Job %s ran.", "j1")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)

    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "Job j1 ran."
    assert (line["tenant"], line["job"], line["request_id"]) == ("acme", "j1", "r1")
    assert "node" not in line
