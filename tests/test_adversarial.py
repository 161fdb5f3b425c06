"""Findings of an adversarial pass over the API: each test fails today and
passes once the finding is fixed. Every one is a minimal reproduction."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import GREET, GunicornProcess, chain, node


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity, as every other JSON parser does."""

    def refuse(literal: str):
        raise ValueError(f"{literal} is not JSON")

    return json.loads(text, parse_constant=refuse)


@contextlib.contextmanager
def gunicorn_api(stack) -> Iterator[int]:
    """The real API (gunicorn, as `packagerepo run` starts it) on a free port."""
    api = GunicornProcess(stack.env, stack.directory / "gunicorn.log", workers=1)
    try:
        api.wait_ready()
        yield api.port
    finally:
        api.stop()


def raw_request(port: int, head: str, body: bytes = b"", *, close_early=False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode() + body)
        if close_early:
            time.sleep(0.3)
            return b""
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


# --------------------------------------------------------------- blobs


def test_an_upload_cut_short_of_its_content_length_is_never_published(
    isolated_stack, make_user
):
    """HIGH. Under gunicorn a client that declares Content-Length 500000, sends
    100000 bytes and closes the socket gets its truncated blob published."""
    stack = isolated_stack(MAX_UPLOAD_BYTES="1000000")
    services = stack.app.extensions["packagerepo"]
    identity = services.accounts.add_user(
        "cutter", "pw-cutter", tenant="cut", scopes=["read", "write"]
    )
    token, _ = services.accounts.issue_token(identity)
    with gunicorn_api(stack) as port:
        head = (
            "PUT /v1/acme/cut/1.0.0/linux/blob HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: 500000\r\n\r\n"
        )
        raw_request(port, head, b"a" * 100_000, close_early=True)
        time.sleep(1.0)

    records = stack.directory / "data" / "tenants" / "cut" / "records"
    assert not list(records.rglob("*.json")), "a truncated upload was published"


def test_a_malformed_content_digest_is_refused_not_silently_ignored(client, auth):
    """MEDIUM. `Content-Digest: sha-256=:not base64!:` does not match the
    parser's pattern and is ignored, so the blob is published unverified
    (X-Checksum-Sha256: zz, by contrast, is a 400)."""
    response = client.put(
        "/v1/acme/digest/1.0.0/linux/blob",
        data=b"hello",
        headers={**auth, "Content-Digest": "sha-256=:not base64!:"},
    )
    assert response.status_code == 400, response.get_json()
    assert client.get("/v1/acme/digest/versions", headers=auth).status_code == 404


# ------------------------------------------------------------ workflows


def test_a_number_too_large_for_a_float_is_refused_when_registering_a_workflow(
    client, auth
):
    """MEDIUM. `1e400` parses to inf, passes validation, is stored as the
    literal `Infinity`, and from then on GET/execute of that workflow are
    400 INVALID_WORKFLOW ("Infinity is not a JSON number")."""
    document = json.dumps(GREET).replace('"position": [0, 0]', '"position": [1e400, 0]')
    assert "1e400" in document
    response = client.put(
        "/v1/workflows/huge-number",
        data=document,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] == "INVALID_WORKFLOW"


def test_execute_refuses_nan_and_infinity_in_the_workflow_input(
    client, auth, workflows
):
    """MEDIUM. The execute body accepts NaN/Infinity; they flow into the job
    and come back as `NaN` in responses, which is not JSON."""
    response = client.post(
        "/v1/workflows/greet/execute",
        data='{"name": NaN, "n": Infinity}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_REQUEST"


def test_execute_refuses_duplicate_keys_in_the_workflow_input(client, auth, workflows):
    """LOW. Workflow documents refuse duplicate keys (DUPLICATE_KEY); the
    execute body silently keeps the last one."""
    response = client.post(
        "/v1/workflows/greet/execute",
        data='{"name": "a", "name": "b"}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 400


def test_a_result_holding_nan_is_never_sent_as_invalid_json(
    app, client, auth, tenant, worker
):
    """MEDIUM. `{{ float("nan") }}` (or 1e308 * 10) is a float, passes the
    sandbox's JSON check, and the job's result is served as `NaN`."""
    document = chain(
        "nan",
        node("Start", "trigger.start", 0),
        node("Answer", "respond.json", 200, body='{{ float("nan") }}'),
    )
    app.extensions["packagerepo"].catalog.save(tenant, "nan", document)
    response = client.post("/v1/workflows/nan/execute?wait=20", json={}, headers=auth)
    strict_json(response.get_data(as_text=True))
    job_id = response.get_json()["job"]["id"]
    strict_json(client.get(f"/v1/jobs/{job_id}", headers=auth).get_data(as_text=True))


def test_an_expression_cannot_build_an_unbounded_string_inside_a_function_call():
    """HIGH. Size and time limits are checked between AST nodes only, so
    `str()`/`json()`/`join()` of a cheaply built nested list serialise it
    all: len(str([[[[0]*100]*100]*100]*30)) builds a 60 MB string in ~3 s
    despite the 0.5 s limit and the 8 MB cap; *1000 per level exhausts the
    worker's memory (a killed worker, retried MAX_ATTEMPTS times). Inline
    nodes are not preempted, so settings.executionTimeout does not help."""
    from packagerepo.errors import ExpressionFailed
    from worker.expressions import ExpressionContext

    context = ExpressionContext(
        execution_id="x", tenant="t", job_input={}, variables={},
        items_by_node={}, now="2026-01-01T00:00:00Z",
    )  # fmt: skip
    with pytest.raises(ExpressionFailed):
        context.evaluate("{{ len(str([[[[0]*100]*100]*100]*30)) }}")


# --------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "url", ["http://example.com:99999/", "http://example.com:abc/", "http://[::1/"]
)
def test_a_callback_url_with_a_bad_port_or_host_is_a_400_not_a_500(
    client, auth, workflows, url
):
    """MEDIUM. urlsplit().port / urlsplit() raise ValueError, which escapes
    check_destination as 500 INTERNAL_ERROR."""
    response = client.post(
        "/v1/workflows/greet/execute",
        json={},
        headers={**auth, "X-Callback-Url": url},
    )
    assert response.status_code == 400, response.get_json()


def test_oversized_headers_get_the_json_error_envelope_not_gunicorns_html(
    isolated_stack,
):
    """LOW. A 10 KB Idempotency-Key or X-Request-ID is answered by gunicorn
    itself: 431 text/html, outside the JSON error contract."""
    stack = isolated_stack()
    with gunicorn_api(stack) as port:
        head = (
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"X-Request-ID: {'r' * 10_000}\r\n\r\n"
        )
        answer = raw_request(port, head)
    headers, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in headers.lower(), headers[:200]
    assert json.loads(body)["ok"] is False


# ------------------------------------------------------------------ jobs


def test_listing_jobs_with_a_nan_cursor_is_a_400(client, auth):
    """LOW. float('nan') passes the cursor check; Redis refuses '(nan' and
    the ResponseError becomes a 500."""
    response = client.get("/v1/jobs?cursor=nan", headers=auth)
    assert response.status_code == 400


def _finished_job(client, auth) -> str:
    response = client.post(
        "/v1/workflows/greet/execute?wait=20", json={"name": "x"}, headers=auth
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()["job"]["id"]


def test_sse_with_an_out_of_range_last_event_id_is_not_a_500(
    client, auth, workflows, worker
):
    """MEDIUM. Last-Event-ID 99999999999999999999999 reaches LRANGE, Redis
    answers 'value is not an integer or out of range' inside the stream and
    gunicorn answers an HTML 500."""
    job_id = _finished_job(client, auth)
    try:
        response = client.get(
            f"/v1/jobs/{job_id}/events",
            headers={**auth, "Last-Event-ID": "99999999999999999999999"},
        )
        text = response.get_data(as_text=True)
    except Exception as error:
        pytest.fail(f"the event stream raised {error!r}")
    assert response.status_code in {200, 400}
    if response.status_code == 200:
        assert "event: done" in text


def test_sse_with_a_negative_last_event_id_never_emits_non_positive_ids(
    client, auth, workflows, worker
):
    """LOW. Last-Event-ID -3 becomes an LRANGE from the end: the last events
    are replayed with ids -2, -1, 0."""
    job_id = _finished_job(client, auth)
    response = client.get(
        f"/v1/jobs/{job_id}/events", headers={**auth, "Last-Event-ID": "-3"}
    )
    ids = [
        int(line[4:]) for line in response.get_data(as_text=True).splitlines()
        if line.startswith("id: ")
    ]  # fmt: skip
    assert ids and min(ids) >= 1, ids


def test_cancelling_a_cancelled_job_again_does_not_send_its_webhook_again(
    isolated_stack, receiver
):
    """LOW. The second POST /cancel of a cancelled job answered 200 outcome
    'cancelled' and queued the webhook again (one delivery per cancel call)."""
    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    services.catalog.save("hooks", "greet", GREET)
    identity = services.accounts.add_user(
        "hooker", "pw-hooker", tenant="hooks", scopes=["read", "write"]
    )
    auth = {"Authorization": f"Bearer {services.accounts.issue_token(identity)[0]}"}
    hook = receiver(200)
    client = stack.app.test_client()
    submitted = client.post(
        "/v1/workflows/greet/execute",
        json={"name": "x"},
        headers={**auth, "X-Callback-Url": hook.url},
    )
    job_id = submitted.get_json()["job"]["id"]  # no worker yet: stays queued

    first = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    second = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    stack.add_worker()
    time.sleep(3)

    assert first.get_json()["outcome"] == "cancelled"
    assert second.status_code == 409
    assert second.get_json()["error"]["code"] == "JOB_ALREADY_ENDED"
    assert len(hook.deliveries) == 1


# ---------------------------------------------------------------- tenants


def test_a_tenant_the_accounts_accept_can_use_the_workflow_endpoints(client, make_user):
    """MEDIUM. accounts.TENANT_PATTERN allows '.', catalog.TENANT_PATTERN does
    not: a user of tenant 'acme.eu' (accepted by `packagerepo user add`)
    can execute, but GET/PUT /v1/workflows answer 400 'The tenant name is
    not acceptable'."""
    headers = make_user(f"acme.{uuid.uuid4().hex[:8]}")
    response = client.get("/v1/workflows", headers=headers)
    assert response.status_code == 200, response.get_json()


def test_tenant_and_user_names_with_a_trailing_newline_are_refused(tmp_path):
    """LOW. accounts' patterns end in `$`, which matches before a final
    newline: check_tenant('acme\\n') passes (storage then strips it and
    maps it onto tenant 'acme'; the catalog refuses it)."""
    from packagerepo.accounts import Accounts
    from packagerepo.config import Settings
    from packagerepo.errors import InvalidRequest
    from packagerepo.tenants import check_tenant

    accounts = Accounts(Settings(data_dir=tmp_path, jwt_secret="x" * 32))
    with pytest.raises(InvalidRequest):
        check_tenant("acme\n")
    with pytest.raises(InvalidRequest):
        accounts.add_user("admin\n", "pw", tenant="acme", scopes=["read"])
