"""The engine's per-node step: tries, retries and the node's body.

``NodeSteps.attempts`` runs one node for a run, retrying as the node asks,
and is the one place where exceptions become node errors. Nodes of the
generic categories run inline; the others on a daemon thread the step walks
away from at the deadline or on cancel (see the NOTE in ``worker.engine``).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import pkgutil
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import worker.nodes
from loader.registry import NodeRegistry
from packagerepo.errors import ExpressionFailed, NodeFailed, PackageRepoError
from worker.body_threads import body_threads
from worker.expressions import DEADLINE_PASSED, ExpressionContext
from worker.nodes.base import (
    IMPLEMENTATIONS,
    INLINE_TYPES,
    SLEEP_SLICE_SECONDS,
    Cancelled,
    Execution,
    Item,
    NodeCall,
    NodeImplementation,
    NodeResult,
    Outputs,
    Respond,
)
from worker.outcome import EngineLimits

logger = logging.getLogger(__name__)

INLINE_CATEGORIES = frozenset({"trigger", "logic", "data", "respond"})
"""Node categories whose bodies run inline (see the NOTE in ``worker.engine``);
``worker.nodes.base.INLINE_TYPES`` adds single types of other categories."""


@cache
def load_implementations() -> dict[str, NodeImplementation]:
    """Import every module of ``worker.nodes`` so its nodes register."""
    for module in pkgutil.iter_modules(worker.nodes.__path__):
        try:
            importlib.import_module(f"worker.nodes.{module.name}")
        except Exception:
            logger.exception("Node module %s failed to import.", module.name)
    return IMPLEMENTATIONS


def node_category(registry: NodeRegistry, node_type: str) -> str:
    """The registry's category of ``node_type``, else the prefix of its name."""
    description = registry.get(node_type) or {}
    return str(description.get("category") or node_type.partition(".")[0])


class NodeSteps:
    """Runs single nodes for one run, within its deadline and limits."""

    def __init__(
        self,
        *,
        registry: NodeRegistry,
        limits: EngineLimits,
        execution: Execution,
        context: ExpressionContext,
        services: Any,
        deadline: float,
        is_cancelled: Callable[[], bool],
        log_context: tuple[str, str],
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.execution = execution
        self.context = context
        self.services = services
        self.deadline = deadline
        self.is_cancelled = is_cancelled
        self.log_context = log_context
        self.implementations = load_implementations()

    def attempts(
        self, node: dict[str, Any], inputs: list[list[Item]], record: dict[str, Any]
    ) -> NodeResult | dict[str, Any]:
        """Run the node, retrying when it asks to: its result, or the last error."""
        tries, pause = self._retry_policy(node)
        error: dict[str, Any] = {}
        for attempt in range(1, tries + 1):
            record["attempts"] = attempt
            result = self._attempt(node, inputs)
            if not isinstance(result, dict):
                return result
            error = result
            if attempt == tries or error["code"] == "EXECUTION_TIMEOUT":
                break
            if not self._pause_before_retry(node["name"], pause):
                break
        return error

    def _attempt(
        self, node: dict[str, Any], inputs: list[list[Item]]
    ) -> NodeResult | dict[str, Any]:
        """One try. The one place where exceptions become node errors."""
        try:
            return self._checked(node, self._invoke(node, inputs))
        except Cancelled:
            raise
        except PackageRepoError as error:
            return {
                "code": error.code,
                "message": error.message,
                "status": error.status,
            }
        except Exception as error:
            logger.exception(
                "Node %s of job %s (tenant %s) raised an unexpected error.",
                node["name"],
                self.log_context[1],
                self.log_context[0],
            )
            return {
                "code": "NODE_ERROR",
                "message": f"Node {node['name']!r} failed unexpectedly "
                f"({type(error).__name__}).",
                "status": 500,
            }

    def _invoke(self, node: dict[str, Any], inputs: list[list[Item]]) -> NodeResult:
        if node.get("disabled"):
            return Outputs.single([item for items in inputs for item in items])
        self._check_items_in(node["name"], inputs)

        node_type = node["type"]
        node_deadline = time.monotonic() + self.registry.timeout_seconds(node_type)
        deadline = min(node_deadline, self.deadline)
        code = "NODE_TIMEOUT" if node_deadline <= self.deadline else "EXECUTION_TIMEOUT"
        call = NodeCall(
            name=node["name"],
            type=node_type,
            parameters=node.get("parameters") or {},
            inputs=inputs,
            execution=self.execution,
            services=self.services,
            evaluate=self._evaluator(node["name"], deadline, code),
            deadline=deadline,
            deadline_code=code,
            is_cancelled=self.is_cancelled,
        )
        implementation = self.implementations[node_type]
        if self._runs_inline(node_type):
            result = implementation(call)
        else:
            result = self._run_abandonable(implementation, call)
        call.check_deadline()
        return result

    def _runs_inline(self, node_type: str) -> bool:
        return (
            node_type in INLINE_TYPES
            or node_category(self.registry, node_type) in INLINE_CATEGORIES
        )

    def _check_items_in(self, name: str, inputs: list[list[Item]]) -> None:
        # Outputs are capped one by one; several wires into one node (or the
        # same wire listed again) add up, so the sum is capped too.
        limit = self.limits.max_items_per_output
        total = sum(len(items) for items in inputs)
        if total > limit:
            raise NodeFailed(
                f"Node {name!r} received {total} items; the limit is {limit}.",
                code="ITEM_LIMIT_EXCEEDED",
            )

    def _evaluator(
        self, name: str, deadline: float, code: str
    ) -> Callable[[Any, Item | None], Any]:
        context = self.context

        def evaluate(value: Any, item: Item | None = None) -> Any:
            if time.monotonic() >= deadline:
                raise NodeFailed(f"Node {name!r} ran past its time limit.", code=code)
            try:
                return context.evaluate(value, item, deadline)
            except ExpressionFailed as failed:
                if failed.code != DEADLINE_PASSED:
                    raise
                raise NodeFailed(
                    f"Node {name!r} ran past its time limit.", code=code
                ) from failed

        return evaluate

    def _run_abandonable(
        self, implementation: NodeImplementation, call: NodeCall
    ) -> NodeResult:
        """Run a node body on a daemon thread; walk away on deadline or cancel."""
        pending = body_threads().submit(implementation, call)
        while True:
            if call.is_cancelled():
                raise Cancelled(f"Node {call.name!r} was cancelled while running.")
            remaining = call.deadline - time.monotonic()
            if remaining <= 0:
                logger.warning(
                    "Node %s of job %s (tenant %s) ran past its deadline; "
                    "its thread is abandoned.",
                    call.name,
                    self.log_context[1],
                    self.log_context[0],
                )
                call.check_deadline()
            try:
                result: NodeResult = pending.result(
                    timeout=min(max(remaining, 0.001), SLEEP_SLICE_SECONDS)
                )
            except concurrent.futures.TimeoutError:
                continue
            return result

    def _checked(self, node: dict[str, Any], result: Any) -> NodeResult:
        """The node's result, or NodeFailed when it breaks the contract or limits."""
        if isinstance(result, Respond):
            return result
        if not isinstance(result, Outputs) or not isinstance(result.lists, list):
            raise NodeFailed(
                f"Node {node['name']!r} returned {type(result).__name__}, not outputs."
            )

        limit = self.limits.max_items_per_output
        for items in result.lists:
            if not isinstance(items, list):
                raise NodeFailed(
                    f"Node {node['name']!r} returned an output that is "
                    "not a list of items."
                )
            if len(items) > limit:
                raise NodeFailed(
                    f"Node {node['name']!r} emitted {len(items)} items on one "
                    f"output; the limit is {limit}.",
                    code="ITEM_LIMIT_EXCEEDED",
                )
            if not all(type(item) is dict for item in items):
                raise NodeFailed(
                    f"Node {node['name']!r} emitted an item that is not an object."
                )
        return result

    def _retry_policy(self, node: dict[str, Any]) -> tuple[int, float]:
        """(tries, seconds between them) from retryOnFail/maxTries/waitBetweenTries."""
        if node.get("retryOnFail") is not True:
            return 1, 0.0
        limits = self.limits
        tries = _bounded_int(
            node.get("maxTries"), limits.default_tries, 1, limits.max_tries
        )
        wait = _bounded_int(
            node.get("waitBetweenTries"),
            limits.default_wait_between_tries_ms,
            0,
            limits.max_wait_between_tries_ms,
        )
        return tries, wait / 1000

    def _pause_before_retry(self, name: str, seconds: float) -> bool:
        """Sleep between tries; False when the run's deadline comes first.

        Raises ``Cancelled`` when the job is cancelled meanwhile.
        """
        wake_at = time.monotonic() + seconds
        if wake_at >= self.deadline:
            return False
        while (remaining := wake_at - time.monotonic()) > 0:
            if self.is_cancelled():
                raise Cancelled(f"Node {name!r} was cancelled between tries.")
            time.sleep(min(remaining, SLEEP_SLICE_SECONDS))
        return True


def _bounded_int(value: Any, default: int, low: int, high: int) -> int:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return default
    return max(low, min(int(value), high))
