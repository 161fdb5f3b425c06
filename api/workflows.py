"""Workflow documents over HTTP: validate, list, read and register.

``POST /v1/workflows/validate`` answers a report for any posted document
(200 even when it is invalid: the report says so). ``PUT`` registers a
tenant's own workflow after validating it; bundled names are read-only.
Documents are parsed with the loader's own limits (size, depth, duplicate
keys), so an unparseable body is ``INVALID_WORKFLOW``, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from api import services
from api.auth import require_scope
from loader import Report, parse_document, validate
from loader.catalog import check_name
from packagerepo.errors import (
    Forbidden,
    InvalidRequest,
    InvalidWorkflow,
    UnsupportedMediaType,
    WorkflowNotFound,
)

logger = logging.getLogger(__name__)

workflows_bp = Blueprint("workflows", __name__)


def _strict() -> bool:
    raw = request.args.get("strict", "false").strip().lower()
    if raw not in {"true", "false", "1", "0", "yes", "no"}:
        raise InvalidRequest("strict must be true or false.")
    return raw in {"true", "1", "yes"}


def _posted_document() -> dict[str, Any]:
    if not request.is_json:
        raise UnsupportedMediaType("The body must be application/json.")
    raw = request.get_data(cache=True)
    return parse_document(raw, max_bytes=services().settings.max_body_bytes)


def _declared_scope(document: dict[str, Any]) -> Any:
    settings = document.get("settings")
    return settings.get("scope", "read") if isinstance(settings, dict) else "read"


@workflows_bp.post("/v1/workflows/validate")
@require_scope("read")
def validate_posted() -> Response:
    strict = _strict()
    document = _posted_document()
    report = validate(
        document,
        registry=services().registry,
        tenant=g.identity.tenant,
        strict=strict,
    )
    return jsonify({"ok": True, "report": report.to_dict()})


@workflows_bp.get("/v1/workflows")
@require_scope("read")
def list_workflows() -> Response:
    tenant = g.identity.tenant
    catalog = services().catalog
    listed = [_summary(tenant, name) for name in catalog.names(tenant)]
    return jsonify({"ok": True, "workflows": listed})


def _summary(tenant: str, name: str) -> dict[str, Any]:
    state = services()
    try:
        document, source = state.catalog.read(tenant, name)
    except InvalidWorkflow as refused:
        # A broken file must not hide the others from the listing.
        logger.warning("Workflow %r of tenant %r does not parse.", name, tenant)
        return {
            "name": name,
            "source": state.catalog.source_of(tenant, name),
            "digest": None,
            "valid": False,
            "error": refused.to_dict(),
        }

    entry = state.cache.validated(tenant, document)
    return {
        "name": name,
        "source": source,
        "digest": entry.digest,
        "valid": entry.report.valid,
        "scope": _declared_scope(entry.document),
        "errors": len(entry.report.errors),
        "warnings": len(entry.report.warnings),
    }


@workflows_bp.get("/v1/workflows/<name>")
@require_scope("read")
def read_workflow(name: str) -> Response:
    tenant = g.identity.tenant
    state = services()
    document, source = state.catalog.read(tenant, name)
    entry = state.cache.validated(tenant, document)
    return jsonify(
        {
            "ok": True,
            "name": name,
            "source": source,
            "digest": entry.digest,
            "definition": entry.document,
            "report": entry.report.to_dict(),
        }
    )


@workflows_bp.put("/v1/workflows/<name>")
@require_scope("write")
def register_workflow(name: str) -> tuple[Response, int]:
    tenant = g.identity.tenant
    state = services()
    check_name(name)
    if _is_bundled(name):
        raise Forbidden(f"The bundled workflow {name!r} is read-only.")

    strict = _strict()
    entry = state.cache.validated(tenant, _posted_document())
    report = entry.report
    if strict:
        report = Report(report.errors, report.warnings, strict=True)
    report.raise_for_errors()

    created = not _exists_for(tenant, name)
    state.catalog.save(tenant, name, entry.document)
    logger.info("Tenant %r registered workflow %r (%s).", tenant, name, entry.digest)
    body = {
        "ok": True,
        "name": name,
        "source": "tenant",
        "digest": entry.digest,
        "report": report.to_dict(),
    }
    return jsonify(body), 201 if created else 200


def _is_bundled(name: str) -> bool:
    return (services().catalog.bundled_dir / f"{name}.json").is_file()


def _exists_for(tenant: str, name: str) -> bool:
    try:
        services().catalog.source_of(tenant, name)
    except WorkflowNotFound:
        return False
    return True
