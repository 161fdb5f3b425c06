"""What a run ends with, and the limits it runs under.

The statuses of a run and of its nodes, the ``EngineLimits`` a run is held
to, the ``RunOutcome`` the engine hands back, and the checks a run's result
must pass. ``worker.engine`` re-exports the public names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from loader.limits import DEFAULT_EXECUTION_TIMEOUT, MAX_EXECUTION_TIMEOUT
from loader.schema import MAX_TRIES, MAX_WAIT_BETWEEN_TRIES_MS
from packagerepo.errors import ExpressionFailed
from worker.expression_values import check_size
from worker.expressions import EXPRESSION_TIME_LIMIT, MAX_OUTPUT_CHARS


class RunStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NodeStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    NOT_RUN = "not_run"


class OnError(StrEnum):
    STOP_WORKFLOW = "stopWorkflow"
    CONTINUE_REGULAR_OUTPUT = "continueRegularOutput"
    CONTINUE_ERROR_OUTPUT = "continueErrorOutput"


@dataclass(frozen=True)
class EngineLimits:
    """Bounds on one run; every one of them fails the run with a code."""

    max_items_per_output: int = 10_000
    """Items a node may emit on one output, and take in over all its inputs."""
    max_item_fields_per_run: int = 2_000_000
    """Fields (at any depth; an object shared by many items counts once) of
    all the items a run's nodes hold at once (a node's output is kept for the
    rest of the run): about 60 MB of dictionaries.
    Each output is capped on its own, but a chain of nodes copying wide
    items was not."""
    max_result_bytes: int = 10 * 1024 * 1024
    max_expression_chars_per_run: int = 16 * MAX_OUTPUT_CHARS
    """What all expressions of a run may build together (JSON characters)."""
    default_execution_timeout: float = DEFAULT_EXECUTION_TIMEOUT
    max_execution_timeout: float = MAX_EXECUTION_TIMEOUT
    expression_time_limit: float = EXPRESSION_TIME_LIMIT
    default_tries: int = 3
    max_tries: int = MAX_TRIES
    default_wait_between_tries_ms: int = 1000
    max_wait_between_tries_ms: int = MAX_WAIT_BETWEEN_TRIES_MS


@dataclass
class RunOutcome:
    """How a run ended: its status, result or error, and the per-node log."""

    status: str
    result: Any
    error: dict[str, Any] | None
    nodes: list[dict[str, Any]]
    progress: dict[str, int]
    http_status: int = 200
    """The respond node's status (or the error's), for an API that waits."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Ending:
    """Why a run's loop stopped early."""

    status: RunStatus
    error: dict[str, Any] | None = None
    result: Any = None
    http_status: int = 200


def failed(error: dict[str, Any], node: str | None) -> Ending:
    """The ending of a run that failed with ``error`` (at ``node``, if any)."""
    status = error.get("status", 500)
    return Ending(
        RunStatus.FAILED,
        error={**error, "node": node},
        http_status=status if isinstance(status, int) else 500,
    )


def timeout_error() -> dict[str, Any]:
    return {
        "code": "EXECUTION_TIMEOUT",
        "message": "The workflow ran past its execution timeout.",
        "status": 500,
    }


def result_problem(result: Any, limits: EngineLimits) -> dict[str, Any] | None:
    """Why ``result`` cannot be a run's result (not JSON, too large), or None."""
    # Items can share one large value many times over: weigh the result with
    # a walk that stops at the limit before serialising any of it.
    try:
        check_size(result, limits.max_result_bytes)
    except ExpressionFailed as problem:
        if problem.code == "EXPRESSION_TOO_LARGE":
            return {
                "code": "RESULT_TOO_LARGE",
                "message": "The workflow's result is larger than "
                f"{limits.max_result_bytes} bytes.",
                "status": 500,
            }
    try:
        encoded = json.dumps(result, separators=(",", ":"), allow_nan=False)
        size = len(encoded.encode())
    except (TypeError, ValueError, RecursionError):
        return {
            "code": "INVALID_RESULT",
            "message": "The workflow's result is not JSON (or nests too deeply).",
            "status": 500,
        }
    if size > limits.max_result_bytes:
        return {
            "code": "RESULT_TOO_LARGE",
            "message": f"The workflow's result is {size} bytes; the limit is "
            f"{limits.max_result_bytes}.",
            "status": 500,
        }
    return None


def blank_record(node: dict[str, Any]) -> dict[str, Any]:
    """The log record of a node before it runs."""
    return {
        "name": node["name"],
        "type": node["type"],
        "status": NodeStatus.NOT_RUN.value,
        "started_at": None,
        "duration_ms": None,
        "items_in": 0,
        "items_out": 0,
        "attempts": 0,
        "error": None,
    }
