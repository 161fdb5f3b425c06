"""Respond nodes: end the run with a body or an error.

``respond.json`` ends the job ``succeeded`` with its body as the result;
``respond.error`` ends it ``failed`` with a code, message and HTTP status.
"""

from __future__ import annotations

from typing import Any

from packagerepo.errors import NodeFailed
from worker.nodes.base import NodeCall, Respond, implements, workflow_error

BODILESS = frozenset({204, 205})
"""Statuses whose answer has no body, so no JSON: respond.json refuses them."""


def _status(call: NodeCall, default: int, low: int, high: int) -> int:
    status = call.param("status", default)
    if (
        isinstance(status, str)
        and status.strip().isascii()
        and status.strip().isdigit()
    ):
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool):
        status = -1
    if not low <= status <= high or status in BODILESS:
        raise NodeFailed(
            f"Node {call.name!r} needs an HTTP status from {low} to {high}"
            " that carries a body (not 204 or 205).",
            code="INVALID_PARAMETER",
        )
    return status


@implements("respond.json")
def respond_json(call: NodeCall) -> Respond:
    body: Any = call.param("body")
    return Respond(body=body, status=_status(call, 200, 200, 299))


@implements("respond.error")
def respond_error(call: NodeCall) -> Respond:
    code, message = workflow_error(call, "The workflow answered with an error.")
    status = _status(call, 500, 400, 599)
    return Respond(
        body={"code": code, "message": message},
        status=status,
        code=code,
        message=message,
    )
