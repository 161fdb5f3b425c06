"""Every error is the JSON envelope with a code (design §2)."""

from __future__ import annotations

import time

import pytest
import redis

from packagerepo.config import Settings


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.is_json
    body = response.get_json()
    assert body["ok"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    return body


def test_unknown_route_is_a_json_404(client):
    assert_envelope(client.get("/no/such/route"), 404, "NOT_FOUND")


def test_wrong_method_is_a_json_405(client):
    response = client.delete("/auth/login")

    assert_envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]


def test_malformed_json_is_invalid_request(client):
    response = client.post(
        "/auth/login", data=b"{not json", content_type="application/json"
    )

    assert_envelope(response, 400, "INVALID_REQUEST")


def test_non_json_body_is_unsupported_media_type(client):
    response = client.post("/auth/login", data=b"username=a", content_type="text/plain")

    assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_huge_body_is_refused_with_413(client):
    body = b'{"username": "' + b"a" * (2 * 1024 * 1024) + b'"}'

    response = client.post("/auth/login", data=body, content_type="application/json")

    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")
    # The same words as a chunked body past the limit gets (a fresh user
    # found werkzeug's own sentence here).
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    assert response.get_json()["error"]["message"] == (
        f"The body is over {limit} bytes."
    )


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_body_is_refused(client, depth):
    body = b"[" * depth + b"]" * depth

    response = client.post("/auth/login", data=body, content_type="application/json")

    assert_envelope(response, 400, "INVALID_REQUEST")


def test_non_object_body_is_invalid_request(client):
    response = client.post("/auth/login", json=[1, 2])

    assert_envelope(response, 400, "INVALID_REQUEST")


def test_request_id_is_echoed_or_generated(client):
    echoed = client.get("/health", headers={"X-Request-ID": "abc-123"})
    generated = client.get("/health", headers={"X-Request-ID": "bad id with spaces!"})

    assert echoed.headers["X-Request-ID"] == "abc-123"
    assert len(generated.headers["X-Request-ID"]) == 32


def test_redis_down_is_a_fast_503(tmp_path):
    from api import create_app

    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path, jwt_secret="s" * 32
    )
    app = create_app(settings)
    accounts = app.extensions["packagerepo"].accounts
    identity = accounts.add_user("ops", "pw", tenant="default", scopes=["read"])
    auth = {"Authorization": f"Bearer {accounts.issue_token(identity)[0]}"}

    started = time.monotonic()
    response = app.test_client().post(
        "/v1/workflows/resolve_latest/execute", json={}, headers=auth
    )

    assert_envelope(response, 503, "QUEUE_UNAVAILABLE")
    # Generous bound: the point is "no hang", not speed.
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "refusal",
    [
        redis.exceptions.OutOfMemoryError("OOM command not allowed"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    ],
)
def test_a_redis_that_refuses_writes_is_a_503_not_a_500(
    client, auth, workflows, monkeypatch, refusal
):
    """Found by an adversarial pass: maxmemory with noeviction gave a 500."""
    limits = client.application.extensions["packagerepo"].rate_limits

    def refuse(*_args, **_kwargs):
        raise refusal

    monkeypatch.setattr(limits, "hit", refuse)
    response = client.post("/v1/workflows/greet/execute", json={}, headers=auth)

    assert_envelope(response, 503, "QUEUE_UNAVAILABLE")
