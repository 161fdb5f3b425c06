"""LOG_FORMAT=json: every line the API process writes is one JSON object."""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import GREET, GunicornProcess, service_env

pytestmark = pytest.mark.integration


def test_every_api_log_line_is_json_and_submissions_are_logged(
    redis_server, tmp_path, settings
):
    env = service_env(redis_server.url, tmp_path / "data", LOG_FORMAT="json")
    api = GunicornProcess(env, tmp_path / "api.log", workers=1)
    try:
        api.wait_ready()
        from loader import Catalog
        from packagerepo.accounts import Accounts
        from packagerepo.config import Settings
        from packagerepo.services import BUNDLED_WORKFLOWS

        local = Settings(data_dir=tmp_path / "data", jwt_secret=settings.jwt_secret)
        Catalog(BUNDLED_WORKFLOWS, local.data_dir).save("logs", "greet", GREET)
        accounts = Accounts(local)
        identity = accounts.add_user("logger", "pw", tenant="logs", scopes=["read"])
        token, _ = accounts.issue_token(identity)
        answer = requests.post(
            f"{api.url}/v1/workflows/greet/execute",
            json={"name": "x"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    finally:
        api.stop()

    lines = [line for line in api.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any non-JSON line
    job_id = answer.json()["job"]["id"]
    submitted = [r for r in records if r.get("job") == job_id]
    assert submitted and submitted[0]["tenant"] == "logs"
    assert any(r["logger"] == "gunicorn.error" for r in records)


def test_a_text_line_cannot_be_split_or_forged_by_what_it_quotes():
    """Found by an adversarial pass: a node named "N\\n<a forged line>" wrote
    that forged line into the text log, a NUL in a name made the log binary,
    and a 100,000-character name made a 100 KB line."""
    import io
    import logging

    from packagerepo.logs import ContextFilter, TextFormatter, log_context

    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.addFilter(ContextFilter())
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("test.text-lines")
    logger.addHandler(handler)
    logger.propagate = False
    forged = "N\n2026-12-04 07:00:00,000 ERROR forged [tenant=default job=x]"
    try:
        with log_context(tenant="acme", node="a\x00b\u202e" + "n" * 100_000):
            logger.warning("Node %s ended %s.", forged, "failed\r")
    finally:
        logger.removeHandler(handler)

    line = sink.getvalue()
    assert line.count("\n") == 1 and line.endswith("\n")
    assert "\x00" not in line and "\r" not in line and "\u202e" not in line
    assert "N\\n2026-12-04 07:00:00,000 ERROR forged" in line
    assert "tenant=acme" in line
    assert len(line) < 2_000
