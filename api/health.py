"""Liveness and readiness."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify

from api import services
from api.auth import resolve_identity
from packagerepo import keys, liveness
from packagerepo.services import Services

health_bp = Blueprint("health", __name__)


@health_bp.get("/health")
def health() -> Response:
    return jsonify({"ok": True, "status": "alive"})


@health_bp.get("/health/ready")
def ready() -> Response:
    """Ready when Redis answers, storage is writable and a worker is up;
    with an admin token, each worker's start-up report beside.

    Its Redis questions go through ``quick_redis``: a Redis that stops
    answering makes this a 503 in about two seconds, inside a probe's
    timeout."""
    state = services()
    identity = resolve_identity(required=False)
    checks = {
        "redis": _check_redis(state),
        "storage": _check_storage(state),
        "workers": _check_workers(state),
    }
    if not (identity and identity.is_admin):
        # The workers' reports (storage paths, hosts, workflow digests) are
        # the admin-only `server` workflow's answer; a probe needs the count.
        checks["workers"].pop("reports", None)
    ready_now = all(check["ok"] for check in checks.values())
    response = jsonify({"ok": ready_now, "checks": checks})
    response.status_code = 200 if ready_now else 503
    return response


def _check_redis(state: Services) -> dict[str, Any]:
    try:
        state.quick_redis.ping()
        return {"ok": True}
    except Exception as error:
        return {"ok": False, "message": f"Redis is unreachable: {type(error).__name__}"}


def _check_storage(state: Services) -> dict[str, Any]:
    data_dir = state.settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".ready-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
        return {"ok": True}
    except OSError as error:
        return {"ok": False, "message": f"Storage is not writable: {error.strerror}"}


def _check_workers(state: Services) -> dict[str, Any]:
    """Ready when a worker's consumer is alive (its main process renews a
    heartbeat) and a worker process's start-up `server` workflow passed."""
    client = state.quick_redis
    try:
        consumers = liveness.alive(client, keys.live_consumers())
        names = [
            keys.server_report(name)
            for name in liveness.alive(client, keys.live_reports())
        ]
        reports = (
            [json.loads(raw) for raw in client.mget(names) if raw] if names else []
        )
    except Exception:
        return {"ok": False, "count": 0, "message": "Redis is unreachable."}

    ready = [report for report in reports if report.get("ready")]
    return {
        "ok": bool(consumers) and bool(ready),
        "count": len(consumers),
        "reports": reports,
    }
