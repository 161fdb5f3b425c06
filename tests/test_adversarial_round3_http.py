"""Findings of a third adversarial pass, over HTTP framing: chunked and
unframed bodies, lone surrogates in JSON, conditional and range downloads,
OPTIONS. Each test failed before its fix; each is a minimal reproduction."""

from __future__ import annotations

import io
import json
import socket

import pytest

from tests.conftest import GREET, GunicornProcess

LIMIT = 1024 * 1024  # MAX_BODY_BYTES of the test settings
JSON = {"Content-Type": "application/json"}
BLOB = "/v1/acme/round3/{version}/default/blob"


def chunked(body: bytes) -> dict:
    """Test-client arguments that send ``body`` as gunicorn hands on a chunked
    one: no usable Content-Length, the stream ended by the server."""
    return {
        "input_stream": io.BytesIO(body),
        "headers": {"Transfer-Encoding": "chunked"},
        "environ_overrides": {"wsgi.input_terminated": True},
    }


def send_chunked(client, method: str, path: str, body: bytes, headers: dict):
    arguments = chunked(body)
    arguments["headers"].update(headers)
    return client.open(path, method=method, **arguments)


def padded(document: dict, size: int) -> bytes:
    """``document`` as JSON followed by spaces, ``size`` bytes in all."""
    text = json.dumps(document).encode()
    return text + b" " * (size - len(text))


def submitted_input(app, tenant: str, response) -> object:
    """The input the job created by an execute ``response`` was stored with."""
    job_id = response.get_json()["job"]["id"]
    return app.extensions["packagerepo"].jobs.get(tenant, job_id)["input"]


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.is_json, response.headers
    body = response.get_json()
    assert body["ok"] is False
    assert body["error"]["code"] == code
    return body


def publish(client, auth: dict, version: str, content: bytes) -> None:
    response = client.put(BLOB.format(version=version), data=content, headers=auth)
    assert response.status_code == 201, response.get_json()


def download(client, version: str, headers: dict):
    response = client.get(BLOB.format(version=version), headers=headers)
    response.get_data()
    response.close()
    return response


# ------------------------------------------------- chunked JSON bodies


TRUNCATION_BAIT = b'{"a":1}' + b" " * LIMIT + b"THIS IS NOT JSON {{{"


def test_a_chunked_execute_body_over_the_limit_is_refused_not_cut_short(
    client, auth, workflows
):
    """HIGH. werkzeug stops reading a chunked body at MAX_BODY_BYTES and hands
    on the prefix: the job ran with {"a": 1} and the rest was never seen."""
    response = send_chunked(
        client, "POST", "/v1/workflows/greet/execute", TRUNCATION_BAIT, {**auth, **JSON}
    )

    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")


def test_a_chunked_workflow_document_over_the_limit_is_refused_not_cut_short(
    client, auth
):
    body = json.dumps(GREET).encode() + TRUNCATION_BAIT[len(b'{"a":1}') :]

    response = send_chunked(
        client, "PUT", "/v1/workflows/cut-short", body, {**auth, **JSON}
    )

    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")
    assert client.get("/v1/workflows/cut-short", headers=auth).status_code == 404


def test_a_chunked_body_of_exactly_the_limit_is_read_whole(
    app, client, auth, workflows
):
    body = padded({"name": "Ada"}, LIMIT)

    response = send_chunked(
        client, "POST", "/v1/workflows/greet/execute", body, {**auth, **JSON}
    )

    assert response.status_code == 202, response.get_json()
    assert submitted_input(app, workflows, response) == {"name": "Ada"}


def test_a_chunked_body_one_byte_over_the_limit_is_refused(client, auth, workflows):
    body = padded({"name": "Ada"}, LIMIT + 1)

    response = send_chunked(
        client, "POST", "/v1/workflows/greet/execute", body, {**auth, **JSON}
    )

    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")


# ------------------------------------------------------ lone surrogates


LONE_SURROGATES = [
    r'"\ud800"',
    r'"\udfff"',
    r'"\uD800"',
    r'"\ud800x"',
    r'"\ud800\ud800"',
    r'"\udc00\ud800"',
    r'"\\\ud800"',
]


@pytest.mark.parametrize("literal", LONE_SURROGATES)
def test_a_lone_surrogate_in_an_execute_body_is_a_400(client, auth, workflows, literal):
    body = '{"name": ' + literal + "}"

    response = client.post(
        "/v1/workflows/greet/execute", data=body, headers={**auth, **JSON}
    )

    refused = assert_envelope(response, 400, "INVALID_REQUEST")
    assert refused["error"]["details"][0]["code"] == "INVALID_JSON"
    assert "surrogate" in refused["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        r'{"username": "\ud800", "password": "x"}',
        r'{"username": "bob", "password": "\udfff"}',
    ],
)
def test_a_lone_surrogate_in_a_login_is_a_400_not_a_500(client, body):
    """HIGH. The username reached the Redis rate-limit key, the password
    bcrypt's encode(): both raised UnicodeEncodeError, answered 500."""
    response = client.post("/auth/login", data=body, headers=JSON)

    assert_envelope(response, 400, "INVALID_REQUEST")


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/v1/workflows/sur"), ("POST", "/v1/workflows/validate")],
)
def test_a_lone_surrogate_in_a_workflow_document_is_a_400_not_a_500(
    client, auth, method, path
):
    """HIGH. The document parsed, then workflow_digest's encode() raised."""
    body = json.dumps({**GREET, "meta": {"x": "SURROGATE"}})
    body = body.replace("SURROGATE", r"\ud800")

    response = client.open(path, method=method, data=body, headers={**auth, **JSON})

    assert_envelope(response, 400, "INVALID_REQUEST")
    assert client.get("/v1/workflows/sur", headers=auth).status_code == 404


@pytest.mark.parametrize(
    ("literal", "expected"),
    [(r'"\ud83d\ude00"', "\U0001f600"), (r'"\\ud800"', "\\ud800")],
)
def test_surrogate_pairs_and_escaped_backslashes_are_accepted(
    app, client, auth, workflows, literal, expected
):
    body = '{"name": ' + literal + "}"

    response = client.post(
        "/v1/workflows/greet/execute", data=body, headers={**auth, **JSON}
    )

    assert response.status_code == 202, response.get_json()
    assert submitted_input(app, workflows, response) == {"name": expected}


# ------------------------------------------- conditional and range reads


def test_a_failed_if_match_is_a_412_envelope_without_the_blob(client, auth):
    """MEDIUM. werkzeug set 412 but kept the whole file as the body."""
    publish(client, auth, "1.0.0", b"secret bytes")

    response = download(client, "1.0.0", {**auth, "If-Match": '"nope"'})

    assert_envelope(response, 412, "PRECONDITION_FAILED")
    assert b"secret bytes" not in response.data


def test_a_failed_if_match_wins_over_a_satisfiable_range(client, auth):
    publish(client, auth, "1.0.1", b"secret bytes")

    headers = {**auth, "If-Match": '"nope"', "Range": "bytes=0-3"}
    response = download(client, "1.0.1", headers)

    assert_envelope(response, 412, "PRECONDITION_FAILED")


@pytest.mark.parametrize("match", ["current", "*"])
def test_a_matching_if_match_downloads_the_blob(client, auth, match):
    publish(client, auth, "1.0.2", b"content")
    etag = download(client, "1.0.2", auth).headers["ETag"]

    headers = {**auth, "If-Match": etag if match == "current" else "*"}
    response = download(client, "1.0.2", headers)

    assert response.status_code == 200
    assert response.data == b"content"


def test_a_matching_if_match_with_a_matching_if_none_match_is_not_modified(
    client, auth
):
    publish(client, auth, "1.0.3", b"content")
    etag = download(client, "1.0.3", auth).headers["ETag"]

    headers = {**auth, "If-Match": etag, "If-None-Match": etag}
    response = download(client, "1.0.3", headers)

    assert response.status_code == 304
    assert response.data == b""


def test_an_unsatisfiable_range_is_a_416_envelope_with_the_size(client, auth):
    """LOW. The 416 said HTTP_ERROR and lost werkzeug's Content-Range."""
    publish(client, auth, "2.0.0", b"12345")

    response = download(client, "2.0.0", {**auth, "Range": "bytes=100-200"})

    assert_envelope(response, 416, "RANGE_NOT_SATISFIABLE")
    assert response.headers["Content-Range"] == "bytes */5"


def test_a_satisfiable_range_is_a_206_with_those_bytes(client, auth):
    publish(client, auth, "2.0.1", b"12345")

    response = download(client, "2.0.1", {**auth, "Range": "bytes=1-3"})

    assert response.status_code == 206
    assert response.data == b"234"
    assert response.headers["Content-Range"] == "bytes 1-3/5"


def test_several_ranges_at_once_are_ignored_and_the_whole_blob_sent(client, auth):
    # RFC 9110 lets a server ignore a Range it does not serve; refusing a
    # satisfiable multi-range request with 416 would break download tools.
    publish(client, auth, "2.0.2", b"123")

    response = download(client, "2.0.2", {**auth, "Range": "bytes=0-0,1-1"})

    assert response.status_code == 200
    assert response.data == b"123"


# ---------------------------------------------------------------- OPTIONS


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/auth/login", {"OPTIONS", "POST"}),
        ("/v1/workflows/greet", {"GET", "HEAD", "OPTIONS", "PUT"}),
        (BLOB.format(version="1.0.0"), {"GET", "HEAD", "OPTIONS", "POST", "PUT"}),
    ],
)
def test_options_answers_json_with_the_allowed_methods(client, path, methods):
    """LOW. Flask's automatic OPTIONS answered 200 text/html, empty."""
    response = client.options(path)

    assert response.status_code == 200
    assert response.is_json, response.headers
    assert response.get_json() == {"ok": True, "allow": sorted(methods)}
    assert set(response.headers["Allow"].split(", ")) == methods


def test_options_on_an_unknown_route_is_still_a_json_404(client):
    assert_envelope(client.options("/no/such/route"), 404, "NOT_FOUND")


# ------------------------------------------------------- unframed uploads


def test_an_upload_with_neither_length_nor_chunking_publishes_nothing(client, auth):
    """HIGH. gunicorn always sets wsgi.input_terminated, so a PUT without
    Content-Length or chunking published a permanent zero-byte artifact."""
    response = client.put(
        BLOB.format(version="3.0.0"),
        headers=auth,
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert_envelope(response, 411, "LENGTH_REQUIRED")
    assert download(client, "3.0.0", auth).status_code == 404


def test_a_chunked_upload_still_publishes(client, auth):
    response = send_chunked(
        client, "PUT", BLOB.format(version="3.0.1"), b"chunked bytes", auth
    )

    assert response.status_code == 201, response.get_json()
    assert download(client, "3.0.1", auth).data == b"chunked bytes"


def test_an_empty_upload_with_a_content_length_of_zero_still_publishes(client, auth):
    response = client.put(
        BLOB.format(version="3.0.2"),
        headers=auth,
        # The test client drops an empty body's Content-Length; gunicorn keeps it.
        environ_overrides={"CONTENT_LENGTH": "0", "wsgi.input_terminated": True},
    )

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["size"] == 0


# --------------------------------------------------- the same under gunicorn


def raw_exchange(port: int, head: str, body: bytes = b"") -> tuple[int, dict]:
    """Send one request as bytes; the answer's status and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode() + body)
        conn.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: conn.recv(65536), b""))
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


def in_chunks(body: bytes, size: int = 100) -> bytes:
    """``body`` in HTTP/1.1 chunked framing."""
    pieces = [body[at : at + size] for at in range(0, len(body), size)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return framed + b"0\r\n\r\n"


def test_gunicorn_refuses_unframed_uploads_and_long_chunked_json(isolated_stack):
    stack = isolated_stack(MAX_BODY_BYTES="1000")
    services = stack.app.extensions["packagerepo"]
    identity = services.accounts.add_user(
        "framer", "pw-framer", tenant="frame", scopes=["read", "write"]
    )
    token, _ = services.accounts.issue_token(identity)
    api = GunicornProcess(stack.env, stack.directory / "gunicorn.log", workers=1)
    head = "{} {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\n{}\r\n"
    chunked_head = "Transfer-Encoding: chunked\r\n"
    try:
        api.wait_ready()
        unframed = raw_exchange(
            api.port, head.format("PUT", BLOB.format(version="1.0.0"), "")
        )
        streamed = raw_exchange(
            api.port,
            head.format("PUT", BLOB.format(version="1.0.1"), chunked_head),
            in_chunks(b"x" * 5000),
        )
        login = raw_exchange(
            api.port,
            head.format(
                "POST",
                "/auth/login",
                chunked_head + "Content-Type: application/json\r\n",
            ),
            in_chunks(padded({"username": "framer", "password": "pw-framer"}, 1001)),
        )
    finally:
        api.stop()

    assert unframed[0] == 411 and unframed[1]["error"]["code"] == "LENGTH_REQUIRED"
    assert streamed[0] == 201 and streamed[1]["size"] == 5000
    assert login[0] == 413 and login[1]["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("path", ["/v1//jobs", "/v1/jobs/", "//health", "/health/"])
def test_paths_with_extra_slashes_answer_json_not_a_redirect_page(client, auth, path):
    response = client.get(path, headers=auth)

    assert response.status_code < 300 or response.status_code >= 400
    assert response.mimetype == "application/json"
    assert response.get_json()["ok"] in (True, False)
