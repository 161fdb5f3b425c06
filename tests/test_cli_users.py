"""`packagerepo user add` from the command line."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def run_cli(*args: str, env: dict, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "packagerepo.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_user_add_without_a_terminal_or_password_says_how_to_give_one(
    stack_env, tmp_path
):
    env = {**stack_env, "DATA_DIR": str(tmp_path)}
    env.pop("PACKAGEREPO_PASSWORD", None)

    result = run_cli("user", "add", "carol", "--tenant", "acme", env=env)

    assert result.returncode == 2
    assert "PACKAGEREPO_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "users" / "carol.json").exists()


def test_user_add_creates_a_user_who_can_log_in(stack_env, tmp_path):
    from packagerepo.accounts import Accounts
    from packagerepo.config import Settings

    env = {**stack_env, "DATA_DIR": str(tmp_path), "PACKAGEREPO_PASSWORD": "pw1"}

    result = run_cli(
        "user", "add", "dave", "--tenant", "acme", "--scopes", "read", env=env
    )

    assert result.returncode == 0, result.stderr
    assert str(tmp_path) in result.stdout
    settings = Settings(data_dir=tmp_path, jwt_secret="x" * 32)
    identity = Accounts(settings).authenticate("dave", "pw1")
    assert (identity.tenant, identity.scopes) == ("acme", ("read",))


def test_webhook_secret_prints_the_tenants_signing_secret(stack_env, tmp_path):
    from packagerepo.config import Settings
    from packagerepo.webhooks import tenant_secret

    env = {**stack_env, "DATA_DIR": str(tmp_path)}

    result = run_cli("webhook-secret", "acme", env=env)

    expected = tenant_secret(
        Settings(data_dir=tmp_path, jwt_secret=env["JWT_SECRET"]), "acme"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
