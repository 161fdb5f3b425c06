"""Findings of a fourth adversarial pass: request bodies that cost the API
quadratic time, the anonymous tenant, passwords bcrypt cannot take, the
worker's fallback when a cached workflow is gone, and the answers a
workflow may give. Each test failed before its fix; each is a minimal
reproduction."""

from __future__ import annotations

import pytest

from packagerepo.errors import InvalidRequest, Unauthorized
from packagerepo.keys import ANONYMOUS_TENANT

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
