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


def test_login_without_a_terminal_or_password_prints_one_error(stack_env, tmp_path):
    env = {**stack_env, "PACKAGEREPO_CONFIG": str(tmp_path)}
    env.pop("PACKAGEREPO_PASSWORD", None)

    result = run_cli("login", "admin", env=env)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "PACKAGEREPO_PASSWORD" in errors[0]


def test_help_is_plain_text_and_names_every_command(stack_env):
    result = run_cli("--help", env=stack_env)

    assert result.returncode == 0
    assert "``" not in result.stdout
    for command in ("run", "api", "worker", "user", "validate", "login", "submit"):
        assert command in result.stdout
    assert "(see --help)" not in result.stdout


def test_user_help_says_how_to_change_an_existing_user(stack_env):
    result = run_cli("user", "add", "--help", env=stack_env)

    option = [line for line in result.stdout.splitlines() if "  --replace" in line]
    assert option and "password" in option[0]


def test_user_add_with_a_password_that_is_not_unicode_text_says_so(stack_env, tmp_path):
    env = {**stack_env, "DATA_DIR": str(tmp_path)}
    env_bytes = {k.encode(): v.encode() for k, v in env.items()}
    env_bytes[b"PACKAGEREPO_PASSWORD"] = b"pw\xff"  # not UTF-8

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "packagerepo.cli",
            "user",
            "add",
            "erin",
            "--tenant",
            "acme",
        ],
        env=env_bytes,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "password" in result.stderr.lower()
    assert not (tmp_path / "users" / "erin.json").exists()


def test_a_reader_that_stops_early_gets_no_traceback(stack_env):
    """Found by a fresh-user pass: `packagerepo webhook-secret acme | head
    -c 20` printed a BrokenPipeError traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "packagerepo.cli", "webhook-secret", "acme"],
        env=stack_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # the reader is gone before anything is written
    _, stderr = process.communicate(timeout=60)

    assert b"Traceback" not in stderr
    assert b"BrokenPipeError" not in stderr


def test_user_delete_removes_the_user_and_their_tokens_stop_working(
    stack_env, tmp_path
):
    """Found by a fresh user: the README spoke of deleted users, but the CLI
    could only add them."""
    import pytest

    from packagerepo.accounts import Accounts
    from packagerepo.config import Settings
    from packagerepo.errors import Unauthorized

    env = {**stack_env, "DATA_DIR": str(tmp_path), "PACKAGEREPO_PASSWORD": "pw1"}
    settings = Settings(data_dir=tmp_path, jwt_secret="x" * 32)
    assert run_cli("user", "add", "erin", "--tenant", "acme", env=env).returncode == 0
    accounts = Accounts(settings)
    token, _ = accounts.issue_token(accounts.authenticate("erin", "pw1"))

    deleted = run_cli("user", "delete", "erin", env=env)
    again = run_cli("user", "delete", "erin", env=env)
    hostile = run_cli("user", "delete", "../users/erin", env=env)

    assert deleted.returncode == 0, deleted.stderr
    assert not (tmp_path / "users" / "erin.json").exists()
    with pytest.raises(Unauthorized):
        accounts.decode_token(token)
    assert (again.returncode, "NOT_FOUND" in again.stderr) == (1, True)
    assert (hostile.returncode, "INVALID_REQUEST" in hostile.stderr) == (1, True)
    assert "Traceback" not in again.stderr + hostile.stderr
