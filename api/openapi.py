"""``GET /openapi.json``: the API described in OpenAPI 3.1.

The operations are written out below, one entry per (Flask rule, method). The
served document keeps only those whose route the app has registered, so the
spec never promises an endpoint this build lacks; a test checks the other
direction (every registered route is described).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from packagerepo.jobs import JobStatus

openapi_bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.1.0"
ANY_JSON: dict[str, Any] = {}
NULLABLE_STRING = {"type": ["string", "null"]}
UNDOCUMENTED_METHODS = frozenset({"HEAD", "OPTIONS"})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _ok(**properties: Any) -> dict[str, Any]:
    """A success body: ``ok: true`` and the given fields."""
    return _obj(["ok", *properties], ok={"const": True}, **properties)


SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["ok", "error"],
        ok={"const": False},
        error=_obj(
            ["code", "message"],
            code={"type": "string", "examples": ["WORKFLOW_NOT_FOUND"]},
            message={"type": "string"},
            details=ANY_JSON,
            status={"type": "integer"},
        ),
        job=_ref("Job"),
    ),
    "User": _obj(
        ["username", "tenant", "scopes"],
        username={"type": "string"},
        tenant={"type": "string"},
        scopes={"type": "array", "items": {"type": "string"}},
    ),
    "Progress": _obj(done={"type": "integer"}, total={"type": "integer"}),
    "Job": _obj(
        ["id", "status"],
        id={"type": "string", "pattern": "^[0-9a-f]{32}$"},
        tenant={"type": "string"},
        workflow={"type": "string"},
        status={"enum": [status.value for status in JobStatus]},
        created_at={"type": "string"},
        started_at=NULLABLE_STRING,
        finished_at=NULLABLE_STRING,
        attempts={"type": "integer"},
        progress=_ref("Progress"),
        nodes={"type": "array", "items": {"type": "object"}},
        result=ANY_JSON,
        error={"type": ["object", "null"]},
        submitted_by={"type": "string"},
        callback_url=NULLABLE_STRING,
        deliveries={"type": "array", "items": {"type": "object"}},
        links=_obj(
            self={"type": "string"},
            events={"type": "string"},
            cancel={"type": "string"},
        ),
    ),
    "Artifact": _obj(
        digest={"type": "string"},
        size={"type": "integer"},
        download_url={"type": "string"},
    ),
}

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
OPTIONAL_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _responses(**by_status: dict[str, Any]) -> dict[str, Any]:
    """Success responses by status, plus the error envelope for any other."""
    responses = {status.lstrip("s"): body for status, body in by_status.items()}
    responses["default"] = _json(_ref("Error"), "An error, in the envelope.")
    return responses


def _param(name: str, where: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": name,
        "in": where,
        "schema": schema,
        "description": text,
    }
    if where == "path":
        parameter["required"] = True
    return parameter


def _path_params(*names: str) -> list[dict[str, Any]]:
    return [_param(name, "path", {"type": "string"}, f"The {name}.") for name in names]


JOB_ID = _path_params("job_id")
COORDINATE = _path_params("namespace", "name", "version", "variant")
PACKAGE = _path_params("namespace", "name")
BLOB_BODY = {
    "required": True,
    "content": {"application/octet-stream": {"schema": {"type": "string"}}},
}
WORKFLOW_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object"}}},
}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/health", "GET"): {
        "summary": "Liveness.",
        "responses": _responses(s200=_json(_ok(status={"const": "alive"}), "Alive.")),
    },
    ("/health/ready", "GET"): {
        "summary": "Readiness: Redis, storage and workers.",
        "responses": {
            "200": _json(_obj(["ok", "checks"], ok={"type": "boolean"}), "Ready."),
            "503": _json(
                _obj(["ok", "checks"], ok={"const": False}), "A dependency is down."
            ),
            "default": _json(_ref("Error"), "An error, in the envelope."),
        },
    },
    ("/metrics", "GET"): {
        "summary": "Prometheus metrics in the text exposition format.",
        "responses": {
            "200": {
                "description": "The metrics.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "default": _json(_ref("Error"), "An error, in the envelope."),
        },
    },
    ("/openapi.json", "GET"): {
        "summary": "This document.",
        "responses": _responses(s200=_json({"type": "object"}, "OpenAPI 3.1.")),
    },
    ("/auth/login", "POST"): {
        "summary": "Exchange a username and password for a bearer token.",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": _obj(
                        ["username", "password"],
                        username={"type": "string"},
                        password={"type": "string"},
                    )
                }
            },
        },
        "responses": _responses(
            s200=_json(
                _ok(
                    token={"type": "string"},
                    expires_in={"type": "integer"},
                    user=_ref("User"),
                ),
                "Logged in.",
            )
        ),
    },
    ("/auth/me", "GET"): {
        "summary": "The caller's identity.",
        "security": BEARER,
        "responses": _responses(s200=_json(_ok(user=_ref("User")), "The caller.")),
    },
    ("/v1/workflows", "GET"): {
        "summary": "Bundled and tenant workflows with digest and validity.",
        "security": BEARER,
        "responses": _responses(s200=_json(_ok(), "The workflows.")),
    },
    ("/v1/workflows/<name>", "GET"): {
        "summary": "A workflow's definition and validation report.",
        "security": BEARER,
        "parameters": _path_params("name"),
        "responses": _responses(s200=_json(_ok(), "The workflow.")),
    },
    ("/v1/workflows/<name>", "PUT"): {
        "summary": "Register the tenant's own workflow (validated first).",
        "security": BEARER,
        "parameters": _path_params("name"),
        "requestBody": WORKFLOW_BODY,
        "responses": _responses(
            s200=_json(_ok(), "Replaced."), s201=_json(_ok(), "Registered.")
        ),
    },
    ("/v1/workflows/validate", "POST"): {
        "summary": "Validate a posted workflow document; nothing runs.",
        "security": BEARER,
        "requestBody": WORKFLOW_BODY,
        "responses": _responses(s200=_json(_ok(), "The validation report.")),
    },
    ("/v1/workflows/<name>/execute", "POST"): {
        "summary": "Enqueue a job running the workflow; the body is its input.",
        "security": OPTIONAL_BEARER,
        "parameters": [
            *_path_params("name"),
            _param(
                "wait",
                "query",
                {"type": "number", "minimum": 0, "maximum": 30},
                "Seconds to wait for the job to end (at most MAX_WAIT_SECONDS).",
            ),
            _param(
                "Idempotency-Key",
                "header",
                {"type": "string", "minLength": 1, "maxLength": 255},
                "The same key and body within 24 h give the same job.",
            ),
            _param(
                "X-Callback-Url",
                "header",
                {"type": "string", "format": "uri"},
                "Receives the ended job as a signed POST.",
            ),
        ],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": ANY_JSON}},
        },
        "responses": _responses(
            s200=_json(
                _obj(
                    ["ok", "job"], ok={"const": True}, result=ANY_JSON, job=_ref("Job")
                ),
                "Ended within ?wait (with its result), or an earlier job with "
                "the same Idempotency-Key.",
            ),
            s202=_json(_ok(job=_ref("Job")), "Queued; follow the Location."),
        ),
    },
    ("/v1/jobs", "GET"): {
        "summary": "The tenant's jobs, newest first.",
        "security": BEARER,
        "parameters": [
            _param(
                "status",
                "query",
                {"enum": [status.value for status in JobStatus]},
                "Only jobs in this state.",
            ),
            _param("workflow", "query", {"type": "string"}, "Only this workflow."),
            _param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": 100},
                "Page size (default 20).",
            ),
            _param(
                "cursor",
                "query",
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                "next_cursor of the previous page.",
            ),
        ],
        "responses": _responses(
            s200=_json(
                _ok(
                    jobs={"type": "array", "items": {"type": "object"}},
                    next_cursor=NULLABLE_STRING,
                ),
                "A page of jobs.",
            )
        ),
    },
    ("/v1/jobs/<job_id>", "GET"): {
        "summary": "A job: status, progress, per-node log, result or error.",
        "security": OPTIONAL_BEARER,
        "parameters": [
            *JOB_ID,
            _param(
                "wait",
                "query",
                {"type": "number", "minimum": 0, "maximum": 30},
                "Long poll: answer once the job has ended or after this many "
                "seconds (at most MAX_WAIT_SECONDS).",
            ),
        ],
        "responses": _responses(s200=_json(_ok(job=_ref("Job")), "The job.")),
    },
    ("/v1/jobs/<job_id>/cancel", "POST"): {
        "summary": "Cancel a queued job, or stop a running one between nodes.",
        "security": BEARER,
        "parameters": JOB_ID,
        "responses": _responses(
            s200=_json(
                _ok(outcome={"enum": ["cancelled", "cancelling"]}, job=_ref("Job")),
                "Cancelled or cancelling.",
            )
        ),
    },
    ("/v1/jobs/<job_id>/events", "GET"): {
        "summary": "Server-sent events status, node and done until the job ends.",
        "security": OPTIONAL_BEARER,
        "parameters": [
            *JOB_ID,
            _param(
                "Last-Event-ID", "header", {"type": "string"}, "Resume after this id."
            ),
        ],
        "responses": {
            "200": {
                "description": "The event stream.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "default": _json(_ref("Error"), "An error, in the envelope."),
        },
    },
    ("/v1/<namespace>/<name>/<version>/<variant>/blob", "PUT"): {
        "summary": "Publish an artifact; the body is the blob, streamed.",
        "security": BEARER,
        "parameters": COORDINATE,
        "requestBody": BLOB_BODY,
        "responses": _responses(s201=_json(_ok(), "Published.")),
    },
    ("/v1/<namespace>/<name>/<version>/<variant>/blob", "POST"): {
        "summary": "Publish an artifact (same as PUT).",
        "security": BEARER,
        "parameters": COORDINATE,
        "requestBody": BLOB_BODY,
        "responses": _responses(s201=_json(_ok(), "Published.")),
    },
    ("/v1/<namespace>/<name>/<version>/<variant>/blob", "GET"): {
        "summary": "Download an artifact's blob (ETag, Content-Length).",
        "security": OPTIONAL_BEARER,
        "parameters": COORDINATE,
        "responses": {
            "200": {
                "description": "The blob.",
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            },
            "304": {"description": "Not modified (If-None-Match)."},
            "default": _json(_ref("Error"), "An error, in the envelope."),
        },
    },
    ("/v1/<namespace>/<name>/latest", "GET"): {
        "summary": "The highest SemVer release of a package.",
        "security": OPTIONAL_BEARER,
        "parameters": [
            *PACKAGE,
            _param("prerelease", "query", {"type": "string"}, "true to allow them."),
            _param(
                "variant",
                "query",
                {"type": "string"},
                "Only versions that have this variant.",
            ),
        ],
        "responses": _responses(s200=_json(_ok(), "The latest version.")),
    },
    ("/v1/<namespace>/<name>/versions", "GET"): {
        "summary": "A package's versions in SemVer order.",
        "security": OPTIONAL_BEARER,
        "parameters": PACKAGE,
        "responses": _responses(s200=_json(_ok(), "The versions.")),
    },
}


def openapi_path(rule: str) -> str:
    """A Flask rule in OpenAPI's template form: ``<path:x>`` → ``{x}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def routes(app: Flask) -> set[tuple[str, str]]:
    """(rule, method) of every documented-worthy route ``app`` serves."""
    return {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in UNDOCUMENTED_METHODS
    }


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document for the routes ``app`` has registered."""
    paths: dict[str, dict[str, Any]] = {}
    for rule, method in sorted(routes(app)):
        operation = OPERATIONS.get((rule, method))
        if operation is not None:
            paths.setdefault(openapi_path(rule), {})[method.lower()] = operation
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "PackageRepo",
            "version": "1",
            "description": "Package artifacts and the workflows that serve them.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


@openapi_bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(build_spec(current_app))
