"""System node types (``system.*``) for the ``server`` start-up workflow.

Each check emits one item ``{"check": <what>, "ok": <bool>, ...}`` and never
fails on a failed check, so the workflow can report every check at once and
branch on the results; a node only fails when the check itself cannot run.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from typing import Any

import redis

from packagerepo.errors import PackageRepoError
from worker.nodes.base import IMPLEMENTATIONS, NodeCall, Outputs, implements

log = logging.getLogger(__name__)


def _emit(item: dict[str, Any]) -> Outputs:
    return Outputs.single([item])


@implements("system.check_storage")
def check_storage(call: NodeCall) -> Outputs:
    """Whether DATA_DIR is writable; clears temporaries a crash left behind."""
    store = call.services.artifacts
    report = store.check()
    if report["ok"]:
        older_than = int(call.param("removeStaleAfterSeconds", 3600))
        report["removed_temporaries"] = store.remove_stale_temporaries(older_than)
    return _emit({"check": "storage", **report})


@implements("system.check_redis")
def check_redis(call: NodeCall) -> Outputs:
    started = time.perf_counter()
    try:
        call.services.redis.ping()
    except redis.RedisError as error:
        log.error("Redis did not answer the start-up ping: %s", error)
        return _emit({"check": "redis", "ok": False, "error": type(error).__name__})

    elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
    return _emit({"check": "redis", "ok": True, "latency_ms": elapsed_ms})


@implements("system.check_registry")
def check_registry(call: NodeCall) -> Outputs:
    """The registry's digest, and registry types that have no implementation."""
    _import_implementations()
    registry = call.services.registry
    missing = sorted(set(registry.types) - set(IMPLEMENTATIONS))
    return _emit(
        {
            "check": "registry",
            "ok": not missing,
            "digest": registry.digest,
            "node_types": len(registry.types),
            "unimplemented": missing,
        }
    )


def _import_implementations() -> None:
    """Import every node module, so each registers its implementations."""
    import worker.nodes

    for module in pkgutil.iter_modules(worker.nodes.__path__):
        importlib.import_module(f"worker.nodes.{module.name}")


@implements("system.validate_workflows")
def validate_workflows(call: NodeCall) -> Outputs:
    """Validate every bundled workflow through the cache, which warms it."""
    tenant = call.execution.tenant
    catalog = call.services.catalog
    workflows = [
        _validate_one(call, name)
        for name in catalog.names(tenant)
        if catalog.source_of(tenant, name) == "bundled"
    ]
    return _emit(
        {
            "check": "workflows",
            "ok": bool(workflows) and all(entry["valid"] for entry in workflows),
            "workflows": workflows,
        }
    )


def _validate_one(call: NodeCall, name: str) -> dict[str, Any]:
    tenant = call.execution.tenant
    try:
        document, _source = call.services.catalog.read(tenant, name)
        entry = call.services.cache.validated(tenant, document)
    except PackageRepoError as error:
        log.error("Bundled workflow %s does not load: %s", name, error.message)
        return {"name": name, "valid": False, "error": error.to_dict()}

    if not entry.report.valid:
        log.error("Bundled workflow %s is invalid.", name)
    return {
        "name": name,
        "valid": entry.report.valid,
        "digest": entry.digest,
        "errors": len(entry.report.errors),
        "warnings": len(entry.report.warnings),
    }
