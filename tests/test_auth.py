"""Login, tokens, scopes and tenants (design §7)."""

from __future__ import annotations

import time

import jwt
import pytest

from tests.conftest import JWT_SECRET


def login(client, username: str, password: str):
    return client.post("/auth/login", json={"username": username, "password": password})


def test_login_returns_a_token_that_identifies_the_user(client, app, tenant):
    app.extensions["packagerepo"].accounts.add_user(
        "alice-" + tenant, "s3cret", tenant=tenant, scopes=["read"]
    )

    response = login(client, "alice-" + tenant, "s3cret")

    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is True
    assert body["user"] == {
        "username": "alice-" + tenant,
        "tenant": tenant,
        "scopes": ["read"],
    }
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.get_json()["user"]["tenant"] == tenant


def test_token_carries_every_required_claim(client, app, tenant):
    app.extensions["packagerepo"].accounts.add_user(
        "bob-" + tenant, "pw", tenant=tenant, scopes=["read", "write"]
    )
    token = login(client, "bob-" + tenant, "pw").get_json()["token"]

    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], issuer="packagerepo")

    assert {"sub", "tenant", "scopes", "iat", "exp", "iss"} <= set(claims)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


@pytest.mark.parametrize(
    ("username", "password"),
    [("nobody", "x"), ("admin", "wrong"), (None, "x"), ("admin", 5), ("", "")],
)
def test_bad_credentials_are_unauthorized(client, username, password):
    response = login(client, username, password)

    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "UNAUTHORIZED"


def _token(claims: dict, secret: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _claims(**overrides) -> dict:
    now = int(time.time())
    claims = {
        "sub": "mallory",
        "tenant": "default",
        "scopes": ["admin"],
        "iat": now,
        "exp": now + 60,
        "iss": "packagerepo",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    "token",
    [
        _token(_claims(), secret="another-secret-that-is-long-enough-32b"),
        _token(_claims(exp=int(time.time()) - 10)),
        _token(_claims(tenant=None)),
        _token(_claims(iss="someone-else")),
        _token(_claims(scopes=["root"])),
        _token(_claims(tenant="../etc")),
        "not.a.jwt",
        "",
    ],
    ids=[
        "forged",
        "expired",
        "no-tenant",
        "wrong-issuer",
        "bad-scope",
        "bad-tenant",
        "garbage",
        "empty",
    ],
)
def test_forged_expired_or_malformed_tokens_are_refused(client, token):
    response = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "UNAUTHORIZED"


def test_unsigned_token_is_refused(client):
    header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    import base64
    import json

    payload = base64.urlsafe_b64encode(json.dumps(_claims()).encode()).rstrip(b"=")
    token = f"{header}.{payload.decode()}."

    response = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401


def test_tenant_header_must_match_the_token(client, make_user, tenant):
    headers = {**make_user(tenant), "X-Tenant-ID": "someone-else"}

    response = client.get("/auth/me", headers=headers)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "TENANT_MISMATCH"


def test_admin_may_act_in_another_tenant(client, make_user):
    headers = {**make_user("default", ("admin",)), "X-Tenant-ID": "other"}

    response = client.get("/auth/me", headers=headers)

    assert response.status_code == 200
    assert response.get_json()["user"]["tenant"] == "other"


def test_missing_scope_is_forbidden(client, make_user, tenant):
    headers = make_user(tenant, ("write",))

    response = client.get("/auth/me", headers=headers)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"


def test_logins_are_rate_limited(client, tenant):
    codes = [login(client, "victim-" + tenant, "guess").status_code for _ in range(12)]

    assert codes[0] == 401
    assert codes[-1] == 429


def test_production_mode_refuses_to_start_without_a_secret(tmp_path):
    from packagerepo.accounts import Accounts
    from packagerepo.config import Settings

    settings = Settings(env="production", data_dir=tmp_path, jwt_secret="")

    with pytest.raises(RuntimeError, match="JWT_SECRET"):
        Accounts(settings)


def test_development_warns_on_every_start_while_admin_keeps_the_seeded_password(
    tmp_path, caplog
):
    from packagerepo.accounts import Accounts
    from packagerepo.config import Settings

    settings = Settings(data_dir=tmp_path, jwt_secret="x" * 32)

    with caplog.at_level("WARNING", logger="packagerepo.accounts"):
        assert Accounts(settings).ensure_admin() == "admin"
        Accounts(settings).ensure_admin()

    warnings = [r for r in caplog.records if "DEVELOPMENT MODE" in r.getMessage()]
    assert len(warnings) == 2
    assert "admin" in warnings[1].getMessage()


def test_no_development_warning_once_admin_has_another_password(tmp_path, caplog):
    from packagerepo.accounts import Accounts
    from packagerepo.config import Settings

    settings = Settings(data_dir=tmp_path, jwt_secret="x" * 32)
    Accounts(settings).ensure_admin()
    Accounts(settings).add_user(
        "admin", "changed", tenant="default", scopes=["admin"], replace=True
    )
    caplog.clear()

    with caplog.at_level("WARNING", logger="packagerepo.accounts"):
        Accounts(settings).ensure_admin()

    assert not [r for r in caplog.records if "DEVELOPMENT MODE" in r.getMessage()]


def _me(client, token: str):
    return client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})


def test_a_deleted_users_token_stops_working(client, app, tenant):
    accounts = app.extensions["packagerepo"].accounts
    accounts.add_user("gone-" + tenant, "pw", tenant=tenant, scopes=["read"])
    token = login(client, "gone-" + tenant, "pw").get_json()["token"]
    assert _me(client, token).status_code == 200

    (accounts.users_dir / f"gone-{tenant}.json").unlink()

    answer = _me(client, token)
    assert answer.status_code == 401
    assert answer.get_json()["error"]["code"] == "UNAUTHORIZED"


def test_a_token_carrying_scopes_its_user_lost_stops_working(client, app, tenant):
    accounts = app.extensions["packagerepo"].accounts
    name = "shrunk-" + tenant
    accounts.add_user(name, "pw", tenant=tenant, scopes=["read", "write"])
    token = login(client, name, "pw").get_json()["token"]

    accounts.add_user(name, "pw", tenant=tenant, scopes=["read"], replace=True)

    assert _me(client, token).status_code == 401
    assert _me(client, login(client, name, "pw").get_json()["token"]).status_code == 200


def test_tokens_issued_before_a_password_change_stop_working(client, app, tenant):
    accounts = app.extensions["packagerepo"].accounts
    name = "moved-" + tenant
    accounts.add_user(name, "old", tenant=tenant, scopes=["read"])
    token = login(client, name, "old").get_json()["token"]

    # At once: within the same second as the login.
    accounts.add_user(name, "new", tenant=tenant, scopes=["read"], replace=True)

    assert _me(client, token).status_code == 401
    assert (
        _me(client, login(client, name, "new").get_json()["token"]).status_code == 200
    )


@pytest.mark.parametrize("content", ["[]", '{"username": "bob"}', "{", '"x"'])
def test_a_corrupt_user_record_is_no_user_not_a_server_error(
    client, app, tenant, content
):
    accounts = app.extensions["packagerepo"].accounts
    name = "broken-" + tenant
    accounts.add_user(name, "pw", tenant=tenant, scopes=["read"])
    token = login(client, name, "pw").get_json()["token"]
    (accounts.users_dir / f"{name}.json").write_text(content)

    assert login(client, name, "pw").status_code == 401
    assert _me(client, token).status_code == 401
