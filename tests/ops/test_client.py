"""The CLI client against the live API under gunicorn: login stores a private
token, submit --wait draws progress and exits by the job's outcome, jobs
lists them."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys

import pytest

from packagerepo.cli import main
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(live, live_tenant, tmp_path, monkeypatch):
    """A logged-in CLI: the token file lives under a config dir of the test's."""
    username, password = live.add_user(live_tenant)
    monkeypatch.setenv("PACKAGEREPO_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("PACKAGEREPO_URL", live.url)
    monkeypatch.setenv("PACKAGEREPO_PASSWORD", password)
    monkeypatch.delenv("PACKAGEREPO_TOKEN", raising=False)
    assert main(["login", username]) == 0
    return tmp_path / "config"


def test_login_stores_the_token_readable_by_its_owner_only(cli_env):
    token_file = cli_env / "token"

    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().count(".") == 2  # a JWT


def test_login_with_a_wrong_password_fails_and_stores_nothing(
    live, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PACKAGEREPO_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("PACKAGEREPO_PASSWORD", "not-the-password")

    status = main(["login", "nobody", "--url", live.url])

    assert status == 1
    err = capsys.readouterr().err
    assert "UNAUTHORIZED" in err
    assert "log in with" not in err
    assert not (tmp_path / "config" / "token").exists()


def test_submit_wait_draws_progress_and_prints_the_result(cli_env, tmp_path, capsys):
    source = tmp_path / "input.json"
    source.write_text(json.dumps({"name": "cli"}))

    status = main(["submit", "greet", "--input", str(source), "--wait"])

    out, err = capsys.readouterr()
    assert status == 0
    assert json.loads(out) == {"name": "cli", "greeting": "Hello, cli!"}
    assert "3/3 nodes" in err and "succeeded" in err
    # Not a terminal: the final line alone, no frames joined by carriage
    # returns (a fresh user found them all on one line of a log).
    assert err.count("nodes") == 1 and "\r" not in err


def test_submit_wait_exits_non_zero_and_prints_the_error_when_the_job_fails(
    cli_env, monkeypatch, capsys
):
    document = json.dumps({"namespace": "acme", "name": "nothing-here"})
    monkeypatch.setattr(sys, "stdin", io.StringIO(document))

    status = main(["submit", "list_versions", "--input", "-", "--wait"])

    out, _err = capsys.readouterr()
    assert status == 1
    assert json.loads(out)["status"] == "failed"
    assert json.loads(out)["error"]["code"] == "NOT_FOUND"


def test_submit_without_wait_prints_the_job_id_and_jobs_lists_it(
    cli_env, monkeypatch, capsys
):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"name": "listed"}'))

    assert main(["submit", "greet", "--input", "-"]) == 0
    job_id = json.loads(capsys.readouterr().out)["id"]
    assert main(["jobs", "--workflow", "greet", "--json"]) == 0

    listed = json.loads(capsys.readouterr().out)
    assert job_id in [job["id"] for job in listed]


def test_the_installed_command_reads_url_and_token_from_the_environment(
    live, live_auth
):
    token = live_auth["Authorization"].removeprefix("Bearer ")
    env = {"PACKAGEREPO_URL": live.url, "PACKAGEREPO_TOKEN": token, "PATH": ""}

    finished = subprocess.run(
        [sys.executable, "-m", "packagerepo.cli", "jobs"],
        env={**env, "PYTHONPATH": str(ROOT), "HOME": str(ROOT / ".no-home")},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 0, finished.stderr


def test_a_command_without_a_token_says_how_to_log_in(
    live, tmp_path, monkeypatch, capsys
):
    """Found by a fresh user: `packagerepo jobs` before logging in answered
    only "The service answered 401."."""
    monkeypatch.setenv("PACKAGEREPO_CONFIG", str(tmp_path / "empty-config"))
    monkeypatch.delenv("PACKAGEREPO_TOKEN", raising=False)

    status = main(["jobs", "--url", live.url])

    assert status == 1
    assert "packagerepo login" in capsys.readouterr().err
