"""Findings of a fourth adversarial pass: request bodies that cost the API
quadratic time, the anonymous tenant, passwords bcrypt cannot take, the
worker's fallback when a cached workflow is gone, and the answers a
workflow may give. Each test failed before its fix; each is a minimal
reproduction."""

from __future__ import annotations

import pytest

from packagerepo.errors import InvalidRequest, Unauthorized
from packagerepo.keys import ANONYMOUS_TENANT
from repository.coordinates import Coordinate

JSON = {"Content-Type": "application/json"}


def test_an_unclosed_string_of_escaped_quotes_is_a_quick_400_at_login(client):
    """CRITICAL. '"' followed by 100,000 escaped quotes (200 KB) held an API
    process for a minute before gunicorn killed it, without a token: the
    depth check's string pattern was quadratic on it."""
    body = '"' + '\\"' * 100_000

    response = client.post("/auth/login", data=body, headers=JSON)

    assert response.status_code == 400
    assert response.get_json()["error"]["details"][0]["code"] == "INVALID_JSON"


def test_no_user_can_belong_to_the_anonymous_tenant(app, tenant):
    """HIGH. Anonymous jobs (auth_login's, with the tokens they issue)
    belong to tenant public; a user created in it listed them all."""
    accounts = app.extensions["packagerepo"].accounts

    with pytest.raises(InvalidRequest) as refused:
        accounts.add_user("u-" + tenant, "pw", tenant=ANONYMOUS_TENANT, scopes=["read"])

    assert ANONYMOUS_TENANT in refused.value.message
    assert not (accounts.users_dir / f"u-{tenant}.json").exists()


def test_a_user_stored_in_the_anonymous_tenant_can_neither_log_in_nor_use_a_token(
    app, tenant
):
    """One saved before the rule (or by hand) is refused too."""
    import json

    accounts = app.extensions["packagerepo"].accounts
    username = "u-" + tenant
    identity = accounts.add_user(username, "pw", tenant=tenant, scopes=["read"])
    token, _ = accounts.issue_token(identity)
    path = accounts.users_dir / f"{username}.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "tenant": ANONYMOUS_TENANT}))
    forged = identity.__class__(username, ANONYMOUS_TENANT, ("read",))
    forged_token, _ = accounts.issue_token(forged)

    with pytest.raises(Unauthorized):
        accounts.authenticate(username, "pw")
    with pytest.raises(Unauthorized):
        accounts.decode_token(forged_token)
    with pytest.raises(Unauthorized):
        accounts.decode_token(token)


def test_a_password_longer_than_bcrypt_takes_is_refused_with_a_code(app, tenant):
    """LOW. A 100-byte password crashed `user add` with bcrypt's ValueError
    (and ADMIN_PASSWORD of that length, the start-up)."""
    accounts = app.extensions["packagerepo"].accounts

    with pytest.raises(InvalidRequest) as refused:
        accounts.add_user("u-" + tenant, "p" * 100, tenant=tenant, scopes=["read"])

    assert "72 bytes" in refused.value.message


def _queued_job_whose_cache_entry_is_gone(settings, tenant, replacement):
    """A greet job queued, its workflow file then replaced by ``replacement``
    (or left as it was when None), and its cache entry expired."""
    from packagerepo import keys
    from packagerepo.services import Services
    from tests.conftest import GREET

    services = Services(settings)
    job = _queued(services, tenant, GREET, {"name": "Ada"})
    if replacement is not None:
        services.catalog.save(tenant, "greet", replacement)
    services.redis.delete(keys.workflow_cache(tenant, job["digest"]))
    return job


def _queued(services, tenant: str, document: dict, job_input: dict) -> dict:
    """A job of ``document`` (saved under its id) queued as the API would."""
    name = document["id"]
    services.catalog.save(tenant, name, document)
    validated = services.cache.validated_file(services.catalog, tenant, name)
    return services.jobs.create(
        tenant=tenant,
        workflow=name,
        digest=validated.digest,
        input=job_input,
        submitted_by="test",
    )


def _run_in_a_fresh_worker(settings, job):
    from packagerepo.services import Services
    from worker.runner import JobRunner

    services = Services(settings)  # its memory cache is empty too
    JobRunner(services, "test:1", lambda *_: None, lambda _: None).run(
        job["id"], job["tenant"]
    )
    return services.jobs.get(job["tenant"], job["id"])


@pytest.mark.integration
def test_a_job_whose_workflow_changed_after_submission_does_not_run_the_new_one(
    settings, tenant
):
    """MEDIUM. On a cache miss the worker ran whatever file was there now:
    a write-scope user queued a read-scope workflow, replaced it with one
    of admin scope holding system nodes, and the job ran those."""
    from tests.conftest import chain, node

    replaced = chain(
        "greet",
        node("Start", "trigger.start", 0),
        node("Answer", "respond.json", 200, body={"replaced": True}),
    )
    job = _queued_job_whose_cache_entry_is_gone(settings, tenant, replaced)

    ended = _run_in_a_fresh_worker(settings, job)

    assert ended["status"] == "failed"
    assert ended["error"]["code"] == "WORKFLOW_CHANGED"
    assert ended["result"] is None
    assert ended["nodes"] == []


@pytest.mark.integration
def test_a_job_whose_cache_entry_expired_still_runs_its_unchanged_file(
    settings, tenant
):
    job = _queued_job_whose_cache_entry_is_gone(settings, tenant, None)

    ended = _run_in_a_fresh_worker(settings, job)

    assert ended["status"] == "succeeded", ended["error"]
    assert ended["result"] == {"name": "Ada", "greeting": "Hello, Ada!"}


@pytest.mark.integration
def test_a_malformed_chunked_body_is_a_400_and_publishes_nothing(isolated_stack):
    """LOW. A chunk size that is no hex number ("ZZ") surfaced as gunicorn's
    InvalidChunkSize inside the view: 500 INTERNAL_ERROR with a traceback."""
    from tests.conftest import GunicornProcess
    from tests.test_adversarial_round3_http import raw_exchange

    stack = isolated_stack()
    services = stack.app.extensions["packagerepo"]
    identity = services.accounts.add_user(
        "chunker", "pw-chunker", tenant="chunk", scopes=["read", "write"]
    )
    token, _ = services.accounts.issue_token(identity)
    head = (
        "{} {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\n"
        "Content-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    broken = b"5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n"
    api = GunicornProcess(stack.env, stack.directory / "gunicorn.log", workers=1)
    try:
        api.wait_ready()
        login = raw_exchange(
            api.port, head.format("POST", "/auth/login", "application/json"), broken
        )
        upload = raw_exchange(
            api.port,
            head.format(
                "PUT", "/v1/acme/chunky/1.0.0/default/blob", "application/octet-stream"
            ),
            broken,
        )
    finally:
        api.stop()

    assert (login[0], login[1]["error"]["code"]) == (400, "INVALID_REQUEST")
    assert (upload[0], upload[1]["error"]["code"]) == (400, "INVALID_REQUEST")
    coordinate = Coordinate.parse("acme", "chunky", "1.0.0", "default")
    assert not services.artifacts.exists("chunk", coordinate)


@pytest.mark.parametrize(
    "url",
    [
        "http://224.0.0.1/hook",  # multicast
        "http://239.255.255.250:1900/hook",  # SSDP multicast
        "http://[ff02::1]/hook",  # link-local multicast (Python calls it global)
        "http://[ff0e::1]/hook",  # global-scope multicast: no one receiver
        "http://192.0.0.8/hook",  # IETF protocol assignments (RFC 6890)
        "http://1.1.1.1:0/hook",  # port 0 is no port
    ],
)
def test_multicast_protocol_and_portless_callbacks_are_refused(url, settings):
    """LOW. Python's is_global says yes to these; a webhook has one
    receiver on a real port."""
    import dataclasses

    from packagerepo.webhooks import check_destination

    strict = dataclasses.replace(settings, webhook_allow_loopback=False)

    with pytest.raises(InvalidRequest):
        check_destination(url, strict)


def test_allowlisted_hosts_are_trimmed_and_case_folded(monkeypatch):
    """LOW. WEBHOOK_ALLOWLIST="a.example, B.example" never matched
    b.example: the entries kept their spaces and capitals."""
    from packagerepo.config import Settings

    monkeypatch.setenv("WEBHOOK_ALLOWLIST", "a.example, B.example ,,")

    assert Settings.from_env().webhook_allowlist == ("a.example", "b.example")


@pytest.mark.integration
@pytest.mark.parametrize("status", ["{{ 204 }}", "{{ 205 }}", "{{ 304 }}", "{{ 301 }}"])
def test_respond_json_cannot_answer_a_status_that_has_no_json_body(
    app, client, auth, tenant, worker, status
):
    """LOW. respond.json with status 204 or 304 made ?wait answer an empty
    body (no job, no JSON), and a 3xx one had no Location to go to."""
    from tests.conftest import chain, node

    document = chain(
        "bodiless",
        node("Start", "trigger.start", 0),
        node("Answer", "respond.json", 200, body={"a": 1}, status=status),
    )
    app.extensions["packagerepo"].catalog.save(tenant, "bodiless", document)

    response = client.post(
        "/v1/workflows/bodiless/execute?wait=20", json={}, headers=auth
    )

    assert response.get_json()["error"]["code"] == "INVALID_PARAMETER"


@pytest.mark.integration
def test_respond_error_codes_are_short_upper_case_words(
    app, client, auth, tenant, worker
):
    """LOW. respond.error passed any code through: an 8 MB string, or the
    digits of a number; the envelope's code is a word like the API's own."""
    from tests.conftest import chain, node

    document = chain(
        "oddcode",
        node("Start", "trigger.start", 0),
        node("Fail", "respond.error", 200, code="{{ $json.code }}", message="m"),
    )
    app.extensions["packagerepo"].catalog.save(tenant, "oddcode", document)

    def answer(code):
        response = client.post(
            "/v1/workflows/oddcode/execute?wait=20", json={"code": code}, headers=auth
        )
        return response.get_json()["error"]

    assert answer("OUT_OF_STOCK")["code"] == "OUT_OF_STOCK"
    for hostile in [5, "X" * 100_000, "lower case", ["A"]]:
        assert answer(hostile)["code"] == "INVALID_PARAMETER", hostile


@pytest.mark.integration
def test_a_stream_resumed_past_the_end_of_its_log_still_gets_done(
    client, auth, workflows, worker
):
    """LOW. Last-Event-ID 999999999 on a running job: the stream said nothing
    and closed after the job ended without its done. An id past the log is
    taken as the log's end."""
    submitted = client.post(
        "/v1/workflows/slow/execute", json={"ms": 1500}, headers=auth
    ).get_json()
    job_id = submitted["job"]["id"]

    response = client.get(
        f"/v1/jobs/{job_id}/events",
        headers={**auth, "Last-Event-ID": "999999999"},
    )
    body = response.get_data(as_text=True)

    assert "event: done" in body
    assert '"succeeded"' in body.split("event: done", 1)[1]


def test_one_anonymous_client_cannot_use_up_every_anonymous_callers_rate(
    settings, tenant
):
    """LOW-MEDIUM. Anonymous executes all counted against tenant public's
    TENANT_SUBMIT_RATE: 80 from one client took the 50 of that second, and
    a login from anyone else was 429. They count per client address now."""
    import dataclasses

    from api import create_app

    app = create_app(dataclasses.replace(settings, anonymous_submit_rate="2/minute"))
    client = app.test_client()
    login = {"username": "u-" + tenant, "password": "wrong"}

    def execute(address):
        return client.post(
            "/v1/workflows/auth_login/execute",
            json=login,
            environ_base={"REMOTE_ADDR": address},
        ).status_code

    flooder = [execute("10.9.0.1") for _ in range(3)]
    other = execute("10.9.0.2")

    assert flooder == [202, 202, 429]
    assert other == 202


@pytest.mark.integration
def test_an_error_before_any_node_runs_carries_node_and_status(settings, tenant):
    """LOW. INVALID_VARIABLE (and every error raised before the first
    node) was recorded without `node` and `status`, which every failed
    workflow's error carries."""
    from packagerepo.services import Services
    from tests.conftest import chain, node
    from worker.runner import JobRunner

    document = chain(
        "cyclic",
        node("Start", "trigger.start", 0),
        node("Answer", "respond.json", 200, body="{{ $vars.a }}"),
    )
    document["variables"] = [
        {"name": "a", "type": "number", "default": "{{ $vars.b }}"},
        {"name": "b", "type": "number", "default": "{{ $vars.a }}"},
    ]
    services = Services(settings)
    job = _queued(services, tenant, document, {})

    JobRunner(services, "test:1", lambda *_: None, lambda _: None).run(
        job["id"], tenant
    )

    error = services.jobs.get(tenant, job["id"])["error"]
    assert error["code"] in {"INVALID_VARIABLE", "WORKFLOW_VALIDATION_ERROR"}
    assert error["node"] is None
    assert isinstance(error["status"], int)


def test_a_callback_host_that_resolves_slowly_does_not_hold_the_request(monkeypatch):
    """Left from an adversarial pass: the callback host was resolved in the
    request's own thread with no time limit, so a name whose DNS server
    never answers held an API thread for the resolver's whole timeout."""
    import socket
    import threading

    from packagerepo import webhooks

    answer = threading.Event()

    def never_answers(*_args, **_kwargs):
        answer.wait(60)
        raise socket.gaierror("no answer")

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", never_answers)
    monkeypatch.setattr(webhooks, "RESOLVE_SECONDS", 0.2)
    outcome: list[BaseException] = []

    def check():
        try:
            webhooks.check_destination("https://slow.example/hook", _strict())
        except BaseException as raised:
            outcome.append(raised)

    caller = threading.Thread(target=check, daemon=True)
    caller.start()
    caller.join(timeout=30)  # a hang guard: it gives up after 0.2 s
    answer.set()

    assert not caller.is_alive()
    assert isinstance(outcome[0], InvalidRequest)
    assert "resolve" in outcome[0].message


def _strict():
    from packagerepo.config import Settings

    return Settings(jwt_secret="x" * 32, webhook_allow_loopback=False)
