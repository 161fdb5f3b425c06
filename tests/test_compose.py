"""docker-compose.yml and the Dockerfile, checked by reading them (no engine
runs on these machines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from packagerepo.cli import _parser

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_stack_has_redis_api_worker_and_flower(compose):
    assert {"redis", "api", "worker", "webhooks", "flower"} <= set(compose["services"])


def test_webhooks_are_delivered_by_workers_of_their_own(compose):
    from packagerepo import keys
    from packagerepo.stack import worker_command

    arguments = _parser().parse_args(compose["services"]["webhooks"]["command"][1:])
    jobs = _parser().parse_args(compose["services"]["worker"]["command"][1:])

    assert arguments.webhooks and not jobs.webhooks
    command = worker_command(arguments.concurrency, None, (keys.WEBHOOK_QUEUE,))
    assert command[command.index("--queues") + 1] == keys.WEBHOOK_QUEUE


def test_worker_can_be_scaled(compose):
    worker = compose["services"]["worker"]

    # A fixed container name or host port would make --scale worker=4 fail.
    assert "container_name" not in worker
    assert "ports" not in worker


def test_api_and_workers_share_redis_and_data(compose):
    services = compose["services"]
    for name in ("api", "worker", "webhooks"):
        env = services[name]["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["DATA_DIR"] == "/data"
        assert any(v.startswith("artifact-data:") for v in services[name]["volumes"])
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert set(compose["volumes"]) >= {"artifact-data", "redis-data"}


def test_services_refuse_to_start_without_a_jwt_secret(compose):
    for name in ("api", "worker", "webhooks"):
        secret = compose["services"][name]["environment"]["JWT_SECRET"]
        assert re.fullmatch(r"\$\{JWT_SECRET:\?.+\}", secret)
        assert (
            compose["services"][name]["environment"]["PACKAGEREPO_ENV"] == "production"
        )


def test_redis_persists_with_append_only_file(compose):
    assert "--appendonly" in compose["services"]["redis"]["command"]


def test_flower_is_behind_a_profile_on_the_same_broker(compose):
    flower = compose["services"]["flower"]

    assert flower["profiles"] == ["monitoring"]
    assert flower["environment"]["CELERY_BROKER_URL"] == "redis://redis:6379/0"


@pytest.mark.parametrize("service", ["api", "worker", "webhooks"])
def test_commands_are_real_cli_subcommands(compose, service):
    command = compose["services"][service]["command"]

    assert command[0] == "packagerepo"
    _parser().parse_args(command[1:])  # exits on an unknown subcommand


def test_dockerfile_copies_only_paths_that_exist():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE)

    assert copies
    for line in copies:
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source


def test_redis_refuses_writes_past_a_memory_cap_rather_than_evicting(compose):
    """Found by an adversarial pass: nothing bounded Redis's memory, so a
    flood of large inputs and results could take the host down. At the cap
    writes fail (the API answers 503), and no job is evicted."""
    command = compose["services"]["redis"]["command"]

    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--maxmemory") + 1] == "${REDIS_MAXMEMORY:-1gb}"


def test_the_local_redis_has_the_same_cap(tmp_path, monkeypatch):
    from packagerepo.stack import redis_command

    monkeypatch.delenv("REDIS_MAXMEMORY", raising=False)
    default = redis_command(6399, tmp_path)
    monkeypatch.setenv("REDIS_MAXMEMORY", "256mb")
    chosen = redis_command(6399, tmp_path)

    assert default[default.index("--maxmemory") + 1] == "1gb"
    assert chosen[chosen.index("--maxmemory") + 1] == "256mb"
    assert chosen[chosen.index("--maxmemory-policy") + 1] == "noeviction"
