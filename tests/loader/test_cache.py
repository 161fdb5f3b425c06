"""The two-tier workflow cache, against a real redis-server."""

from __future__ import annotations

import json
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loader import CachedWorkflow, WorkflowCache, parse_document
from loader.registry import REGISTRY_PATH, load_registry, registry_from_bytes
from packagerepo import keys
from tests.loader.conftest import fixture_paths


def _document(name: str = "linear") -> dict[str, Any]:
    path = next(path for path in fixture_paths("valid") if path.stem == name)
    return json.loads(path.read_text())


def test_a_miss_validates_and_a_second_lookup_hits_memory(
    redis_client: redis.Redis,
) -> None:
    cache = WorkflowCache(redis_client)

    first = cache.validated("acme", _document())
    second = cache.validated("acme", _document())

    assert first.report.valid
    assert second is first
    assert cache.stats == {"hits_memory": 1, "hits_redis": 0, "misses": 1}


def test_another_process_finds_the_entry_in_redis_by_digest(
    redis_client: redis.Redis,
) -> None:
    stored = WorkflowCache(redis_client).validated("acme", _document())
    worker = WorkflowCache(redis_client)

    fetched = worker.fetch("acme", stored.digest)

    assert fetched == CachedWorkflow(stored.digest, stored.document, stored.report)
    assert worker.stats == {"hits_memory": 0, "hits_redis": 1, "misses": 0}
    assert worker.fetch("acme", stored.digest) is not None
    assert worker.stats["hits_memory"] == 1


def test_redis_entries_are_keyed_per_tenant_and_expire(
    redis_client: redis.Redis,
) -> None:
    entry = WorkflowCache(redis_client).validated("acme", _document())

    key = keys.workflow_cache("acme", entry.digest)
    assert 0 < redis_client.ttl(key) <= keys.WORKFLOW_CACHE_TTL


def test_one_tenant_never_sees_another_tenants_entry(
    redis_client: redis.Redis,
) -> None:
    cache = WorkflowCache(redis_client)
    acme = cache.validated("acme", _document())

    assert cache.fetch("globex", acme.digest) is None
    assert WorkflowCache(redis_client).fetch("globex", acme.digest) is None
    assert cache.validated("globex", _document()).digest != acme.digest


def test_an_edited_document_is_a_different_entry(redis_client: redis.Redis) -> None:
    cache = WorkflowCache(redis_client)
    before = cache.validated("acme", _document())
    edited = _document()
    edited["nodes"][1]["type"] = "data.unknown"

    after = cache.validated("acme", edited)

    assert after.digest != before.digest
    assert not after.report.valid


def test_an_edited_registry_is_never_served_a_stale_report(
    redis_client: redis.Redis,
) -> None:
    WorkflowCache(redis_client).validated("acme", _document())
    registry_document = json.loads(REGISTRY_PATH.read_bytes())
    del registry_document["nodeTypes"]["data.set"]
    edited_registry = registry_from_bytes(json.dumps(registry_document).encode())

    entry = WorkflowCache(redis_client, edited_registry).validated("acme", _document())

    assert [problem.code for problem in entry.report.errors] == ["UNKNOWN_NODE_TYPE"]


def test_the_cached_document_is_the_normalised_one(redis_client: redis.Redis) -> None:
    document = _document()
    document["connections"]["Start"]["main"] = {
        "0": [{"node": "Set Fields", "type": "main", "index": 0}]
    }

    entry = WorkflowCache(redis_client).validated("acme", document)
    fetched = WorkflowCache(redis_client).fetch("acme", entry.digest)

    assert fetched is not None
    assert isinstance(fetched.document["connections"]["Start"]["main"], list)
    assert [p.code for p in fetched.report.warnings] == ["LEGACY_CONNECTIONS"]


def test_a_parsed_legacy_document_keeps_its_warning_apart_from_its_twin(
    redis_client: redis.Redis,
) -> None:
    document = _document()
    legacy = _document()
    legacy["connections"]["Start"]["main"] = {
        "0": [{"node": "Set Fields", "type": "main", "index": 0}]
    }
    cache = WorkflowCache(redis_client)

    noted = cache.validated("acme", parse_document(json.dumps(legacy)))
    clean = cache.validated("acme", parse_document(json.dumps(document)))

    assert noted.digest != clean.digest
    assert clean.report.warnings == []


def test_the_lru_drops_the_least_recently_used_entry() -> None:
    cache = WorkflowCache(None, lru_size=2)
    names = ["linear", "branching", "switch_merge"]
    entries = [cache.validated("acme", _document(name)) for name in names]

    assert cache.fetch("acme", entries[0].digest) is None
    assert cache.fetch("acme", entries[2].digest) is entries[2]


def test_a_redis_outage_costs_only_the_second_tier() -> None:
    unreachable = redis.Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    cache = WorkflowCache(unreachable, load_registry())

    entry = cache.validated("acme", _document())

    assert entry.report.valid
    assert cache.fetch("acme", "0" * 64) is None
