"""The DAG engine: runs one workflow document for one job, in this process.

Pure Python, no Celery: the Celery task calls ``run_workflow`` and turns the
``RunOutcome`` into the job record. Semantics (design §4):

* Nodes run one at a time in a deterministic topological order, ties broken
  by their order in the document. Running in that order means that when a
  node's turn comes, every upstream node has already run, been skipped or
  been left behind, so "waits for every input that can still deliver" holds.
* An output delivers when it holds at least one item. A node none of whose
  inputs received anything is ``skipped``, which in turn delivers nothing,
  so skips propagate down a branch not taken.
* Roots: when the document has trigger nodes, they start the run and other
  roots are skipped (unreachable); without triggers, every root starts with
  the job input as its one item.
* A respond node ends the run; otherwise the result is the items of the nodes
  that ended it (nodes that produced output no node ran on), concatenated in
  run order.

NOTE: timeouts. Nodes of the generic categories (trigger, logic, data,
respond) run inline and are bounded cooperatively: expression evaluation and
``NodeCall.sleep`` check the deadline, and a node that returns after its
deadline fails anyway. Nodes of any other category (repository, auth: file
and CPU work the engine cannot see into) run on a daemon thread that the
engine abandons at the deadline or on cancel, so a stuck node never holds
the worker. Python cannot kill a thread: an abandoned node may still finish
its side effect later (the artifact store's write-once, rename-into-place
records keep that consistent). Running such nodes in a subprocess would lift
this, at a cost of milliseconds per node.
"""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from typing import Any

import worker.nodes
from loader.registry import NodeRegistry, load_registry
from packagerepo.errors import InvalidWorkflow, NodeFailed, PackageRepoError
from worker.expressions import EXPRESSION_TIME_LIMIT, ExpressionContext
from worker.graph import Edge, WorkflowGraph
from worker.nodes.base import (
    IMPLEMENTATIONS,
    SLEEP_SLICE_SECONDS,
    Cancelled,
    Execution,
    Item,
    NodeCall,
    NodeResult,
    Outputs,
    Respond,
)
from worker.nodes.trigger import input_item
from worker.variables import resolve_variables

logger = logging.getLogger(__name__)

Observer = Callable[[str, dict[str, Any]], None]

INLINE_CATEGORIES = frozenset({"trigger", "logic", "data", "respond"})
"""Node categories whose bodies run inline (see the module NOTE on timeouts)."""


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
    max_result_bytes: int = 10 * 1024 * 1024
    default_execution_timeout: float = 300.0
    max_execution_timeout: float = 3600.0
    expression_time_limit: float = EXPRESSION_TIME_LIMIT
    default_tries: int = 3
    max_tries: int = 5
    default_wait_between_tries_ms: int = 1000
    max_wait_between_tries_ms: int = 5000


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


# --------------------------------------------------------------- running


@cache
def load_implementations() -> dict[str, Any]:
    """Import every module of ``worker.nodes`` so its nodes register."""
    for module in pkgutil.iter_modules(worker.nodes.__path__):
        try:
            importlib.import_module(f"worker.nodes.{module.name}")
        except Exception:
            logger.exception("Node module %s failed to import.", module.name)
    return IMPLEMENTATIONS


def run_workflow(
    document: dict[str, Any],
    execution: Execution,
    *,
    registry: NodeRegistry | None = None,
    services: Any = None,
    observer: Observer | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    limits: EngineLimits | None = None,
) -> RunOutcome:
    """Run ``document`` for ``execution`` and say how it ended.

    ``observer("node", record)`` hears each node start and end, and
    ``observer("progress", {"done", "total"})`` after each node; an observer
    that raises is logged and ignored. ``is_cancelled()`` is asked before
    each node that would run (and while a node waits), so it should be cheap.

    A document that cannot be run at all (bad shape, cycle, unknown node
    type, bad variables) raises a ``PackageRepoError`` before any node runs;
    everything that goes wrong after that is in the outcome.
    """
    run = _Run(
        graph=WorkflowGraph.from_document(document),
        document=document,
        execution=execution,
        registry=registry or load_registry(),
        services=services,
        observer=observer,
        is_cancelled=is_cancelled,
        limits=limits or EngineLimits(),
    )
    return run.execute()


@dataclass
class _Ending:
    """Why the loop stopped early."""

    status: RunStatus
    error: dict[str, Any] | None = None
    result: Any = None
    http_status: int = 200


class _Run:
    """The state of one run: outputs so far, node records, deadlines."""

    def __init__(
        self,
        *,
        graph: WorkflowGraph,
        document: dict[str, Any],
        execution: Execution,
        registry: NodeRegistry,
        services: Any,
        observer: Observer | None,
        is_cancelled: Callable[[], bool] | None,
        limits: EngineLimits,
    ) -> None:
        self.graph = graph
        self.registry = registry
        self.services = services
        self.observer = observer
        self.cancel_check = is_cancelled
        self.limits = limits
        self.implementations = load_implementations()
        self._check_types()

        self.outputs: dict[str, list[list[Item]]] = {}
        self.error_items: dict[str, list[Item]] = {}
        self.items_by_node: dict[str, list[Item]] = {}
        self.records = {name: _blank_record(graph.nodes[name]) for name in graph.order}
        self.done = 0

        self.started = time.monotonic()
        self.deadline = self.started + self._execution_timeout(document)
        self.log_context = (execution.tenant, execution.job_id)
        self.execution, self.context = self._bind_execution(document, execution)
        self.has_triggers = any(self._is_trigger(n) for n in graph.nodes.values())

    # -- set-up

    def _check_types(self) -> None:
        for name, node in self.graph.nodes.items():
            if node["type"] not in self.implementations and not node.get("disabled"):
                raise InvalidWorkflow(
                    f"Node {name!r} has the type {node['type']!r}, which no worker "
                    "implements.",
                    code="UNKNOWN_NODE_TYPE",
                )

    def _execution_timeout(self, document: dict[str, Any]) -> float:
        settings = document.get("settings")
        seconds = (
            settings.get("executionTimeout") if isinstance(settings, dict) else None
        )
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            return self.limits.default_execution_timeout
        return max(0.0, min(float(seconds), self.limits.max_execution_timeout))

    def _bind_execution(
        self, document: dict[str, Any], execution: Execution
    ) -> tuple[Execution, ExpressionContext]:
        """Resolve the variables, then build the run's expression context."""
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

        def context_for(variables: dict[str, Any]) -> ExpressionContext:
            return ExpressionContext(
                execution_id=execution.job_id,
                tenant=execution.tenant,
                job_input=execution.input,
                variables=variables,
                items_by_node=self.items_by_node,
                now=now,
                time_limit=self.limits.expression_time_limit,
            )

        variables = resolve_variables(
            document.get("variables"), execution.variables or {}, context_for
        )
        return replace(execution, variables=variables), context_for(variables)

    def _is_trigger(self, node: dict[str, Any]) -> bool:
        return self._category(node["type"]) == "trigger"

    def _category(self, node_type: str) -> str:
        description = self.registry.get(node_type) or {}
        return description.get("category") or node_type.partition(".")[0]

    # -- the loop

    def execute(self) -> RunOutcome:
        logger.info(
            "Job %s of tenant %s starts a workflow of %d nodes.",
            self.log_context[1],
            self.log_context[0],
            len(self.graph.order),
        )
        ending = None
        for index, name in enumerate(self.graph.order):
            ending = self._visit(name)
            if ending is not None:
                self._close_remaining(self.graph.order[index:], ending.status)
                break

        outcome = self._outcome(ending)
        logger.info(
            "Job %s of tenant %s ended %s after %.1f ms.",
            self.log_context[1],
            self.log_context[0],
            outcome.status,
            (time.monotonic() - self.started) * 1000,
        )
        return outcome

    def _visit(self, name: str) -> _Ending | None:
        """Skip or run one node; an ``_Ending`` when the run stops here."""
        inputs = self._gather(name)
        if inputs is None:
            self._finish(name, NodeStatus.SKIPPED)
            return None

        if self._cancel_requested():
            self.records[name]["status"] = NodeStatus.CANCELLED.value
            return _Ending(RunStatus.CANCELLED)
        if time.monotonic() >= self.deadline:
            return self._fail(self._timeout_error(), None)

        return self._run_node(name, inputs)

    def _gather(self, name: str) -> list[list[Item]] | None:
        """The node's inputs, or None when nothing reached it (skip)."""
        edges = self.graph.incoming[name]
        if not edges:
            return self._root_inputs(self.graph.nodes[name])

        if len(edges) == 1 and edges[0].input == 0:
            items = self._delivered(edges[0])
            return [items] if items else None

        inputs: list[list[Item]] = [[] for _ in range(max(e.input for e in edges) + 1)]
        for edge in edges:
            inputs[edge.input].extend(self._delivered(edge))
        return inputs if any(inputs) else None

    def _root_inputs(self, node: dict[str, Any]) -> list[list[Item]] | None:
        if self._is_trigger(node):
            return []
        if self.has_triggers:
            return None
        return [[input_item(self.execution.input)]]

    def _delivered(self, edge: Edge) -> list[Item]:
        if edge.kind == "error":
            return self.error_items.get(edge.source, []) if edge.output == 0 else []
        lists = self.outputs.get(edge.source)
        if lists is None or edge.output >= len(lists):
            return []
        return lists[edge.output]

    # -- one node

    def _run_node(self, name: str, inputs: list[list[Item]]) -> _Ending | None:
        node = self.graph.nodes[name]
        record = self.records[name]
        record["status"] = NodeStatus.RUNNING.value
        record["started_at"] = _utc_now()
        record["items_in"] = sum(len(items) for items in inputs)
        self._emit("node", dict(record))

        clock = time.monotonic()
        try:
            result, error = self._attempts(node, inputs, record)
        except Cancelled:
            record["duration_ms"] = _elapsed_ms(clock)
            record["status"] = NodeStatus.CANCELLED.value
            self._emit("node", dict(record))
            return _Ending(RunStatus.CANCELLED)
        record["duration_ms"] = _elapsed_ms(clock)

        if error is not None:
            return self._node_failed(node, record, error)
        if isinstance(result, Respond):
            self._finish(name, NodeStatus.SUCCEEDED)
            return self._respond(name, result)

        self._store(name, result.lists)
        record["items_out"] = sum(len(items) for items in result.lists)
        self._finish(name, NodeStatus.SUCCEEDED)
        return None

    def _attempts(
        self, node: dict[str, Any], inputs: list[list[Item]], record: dict[str, Any]
    ) -> tuple[NodeResult | None, dict[str, Any] | None]:
        """Run the node, retrying when it asks to; (result, None) or (None, error)."""
        tries, pause = self._retry_policy(node)
        error: dict[str, Any] = {}
        for attempt in range(1, tries + 1):
            record["attempts"] = attempt
            result, error = self._attempt(node, inputs)
            if result is not None:
                return result, None
            if attempt == tries or error["code"] == "EXECUTION_TIMEOUT":
                break
            if not self._pause_before_retry(node["name"], pause):
                break
        return None, error

    def _attempt(
        self, node: dict[str, Any], inputs: list[list[Item]]
    ) -> tuple[NodeResult | None, dict[str, Any]]:
        """One try. The one place where exceptions become node errors."""
        try:
            return self._checked(node, self._invoke(node, inputs)), {}
        except Cancelled:
            raise
        except PackageRepoError as error:
            return None, {
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
            return None, {
                "code": "NODE_ERROR",
                "message": f"Node {node['name']!r} failed unexpectedly "
                f"({type(error).__name__}).",
                "status": 500,
            }

    def _invoke(self, node: dict[str, Any], inputs: list[list[Item]]) -> NodeResult:
        if node.get("disabled"):
            return Outputs.single([item for items in inputs for item in items])

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
            is_cancelled=self._cancel_requested,
        )
        implementation = self.implementations[node_type]
        if self._category(node_type) in INLINE_CATEGORIES:
            result = implementation(call)
        else:
            result = self._run_abandonable(implementation, call)
        call.check_deadline()
        return result

    def _evaluator(
        self, name: str, deadline: float, code: str
    ) -> Callable[[Any, Item | None], Any]:
        context = self.context

        def evaluate(value: Any, item: Item | None = None) -> Any:
            if time.monotonic() >= deadline:
                raise NodeFailed(f"Node {name!r} ran past its time limit.", code=code)
            return context.evaluate(value, item)

        return evaluate

    def _run_abandonable(
        self, implementation: Callable[[NodeCall], NodeResult], call: NodeCall
    ) -> NodeResult:
        """Run a node body on a daemon thread; walk away on deadline or cancel."""
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                box["result"] = implementation(call)
            except BaseException as error:
                box["error"] = error

        thread = threading.Thread(target=body, name=f"node:{call.name}", daemon=True)
        thread.start()
        while thread.is_alive():
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
            thread.join(min(max(remaining, 0.001), SLEEP_SLICE_SECONDS))

        if "error" in box:
            raise box["error"]
        return box["result"]

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
            if self._cancel_requested():
                raise Cancelled(f"Node {name!r} was cancelled between tries.")
            time.sleep(min(remaining, SLEEP_SLICE_SECONDS))
        return True

    # -- after a node

    def _store(self, name: str, lists: list[list[Item]]) -> None:
        self.outputs[name] = lists
        if len(lists) == 1:
            self.items_by_node[name] = lists[0]
        else:
            self.items_by_node[name] = [item for items in lists for item in items]

    def _node_failed(
        self, node: dict[str, Any], record: dict[str, Any], error: dict[str, Any]
    ) -> _Ending | None:
        name = node["name"]
        record["error"] = error
        self._finish(name, NodeStatus.FAILED)
        on_error = node.get("onError", OnError.STOP_WORKFLOW)
        logger.info(
            "Node %s of job %s (tenant %s) failed with %s; onError is %s.",
            name,
            self.log_context[1],
            self.log_context[0],
            error["code"],
            on_error,
        )

        if on_error == OnError.CONTINUE_REGULAR_OUTPUT:
            self._store(name, [[{"error": error}]])
            record["items_out"] = 1
            return None
        if on_error == OnError.CONTINUE_ERROR_OUTPUT:
            self.error_items[name] = [{"error": error}]
            self.items_by_node[name] = self.error_items[name]
            record["items_out"] = 1
            return None
        return self._fail(error, name)

    def _respond(self, name: str, respond: Respond) -> _Ending:
        if respond.status >= 400:
            error = {
                "code": respond.code or "WORKFLOW_ERROR",
                "message": respond.message or "The workflow answered with an error.",
                "status": respond.status,
            }
            return self._fail(error, name)

        problem = self._result_problem(respond.body)
        if problem is not None:
            return self._fail(problem, name)
        return _Ending(
            RunStatus.SUCCEEDED, result=respond.body, http_status=respond.status
        )

    def _fail(self, error: dict[str, Any], node: str | None) -> _Ending:
        return _Ending(
            RunStatus.FAILED,
            error={**error, "node": node},
            http_status=error.get("status", 500),
        )

    def _timeout_error(self) -> dict[str, Any]:
        return {
            "code": "EXECUTION_TIMEOUT",
            "message": "The workflow ran past its execution timeout.",
            "status": 500,
        }

    def _result_problem(self, result: Any) -> dict[str, Any] | None:
        try:
            encoded = json.dumps(result, separators=(",", ":"), allow_nan=False)
            size = len(encoded.encode())
        except (TypeError, ValueError):
            return {
                "code": "INVALID_RESULT",
                "message": "The workflow's result is not JSON.",
                "status": 500,
            }
        if size > self.limits.max_result_bytes:
            return {
                "code": "RESULT_TOO_LARGE",
                "message": f"The workflow's result is {size} bytes; the limit is "
                f"{self.limits.max_result_bytes}.",
                "status": 500,
            }
        return None

    def _finish(self, name: str, status: NodeStatus) -> None:
        self.records[name]["status"] = status.value
        self.done += 1
        # Progress first, so an observer that stores both on the node event
        # already holds the count that includes this node.
        self._emit("progress", self._progress())
        self._emit("node", dict(self.records[name]))

    def _close_remaining(self, names: tuple[str, ...], status: RunStatus) -> None:
        """Nodes the run never got to: ``cancelled`` or ``not_run``."""
        closing = (
            NodeStatus.CANCELLED
            if status == RunStatus.CANCELLED
            else NodeStatus.NOT_RUN
        )
        for name in names:
            if self.records[name]["status"] == NodeStatus.NOT_RUN:
                self.records[name]["status"] = closing.value

    def _progress(self) -> dict[str, int]:
        return {"done": self.done, "total": len(self.graph.order)}

    def _outcome(self, ending: _Ending | None) -> RunOutcome:
        if ending is None:
            ending = _Ending(RunStatus.SUCCEEDED, result=self._ended_items())
        if ending.status == RunStatus.SUCCEEDED:
            # A respond node's body is checked like the ended items are.
            problem = self._result_problem(ending.result)
            if problem is not None:
                ending = self._fail(problem, None)
        return RunOutcome(
            status=ending.status.value,
            result=ending.result if ending.status == RunStatus.SUCCEEDED else None,
            error=ending.error,
            nodes=[self.records[name] for name in self.graph.order],
            # Every node has settled (ran, skipped or not run): the bar is full.
            progress={"done": len(self.graph.order), "total": len(self.graph.order)},
            http_status=ending.http_status,
        )

    def _ended_items(self) -> list[Item]:
        """Items of the nodes that produced output that no other node ran on."""
        ran = {NodeStatus.SUCCEEDED, NodeStatus.FAILED}
        items: list[Item] = []
        for name in self.graph.order:
            if name not in self.items_by_node:
                continue
            targets = {edge.target for edge in self.graph.outgoing[name]}
            if not any(self.records[target]["status"] in ran for target in targets):
                items.extend(self.items_by_node[name])
        return items

    # -- the outside world

    def _cancel_requested(self) -> bool:
        if self.cancel_check is None:
            return False
        try:
            return bool(self.cancel_check())
        except Exception:
            logger.warning(
                "Checking whether job %s (tenant %s) was cancelled failed; "
                "the run goes on.",
                self.log_context[1],
                self.log_context[0],
                exc_info=True,
            )
            return False

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        if self.observer is None:
            return
        try:
            self.observer(event, payload)
        except Exception:
            logger.warning(
                "The observer of job %s (tenant %s) failed on a %s event.",
                self.log_context[1],
                self.log_context[0],
                event,
                exc_info=True,
            )


def _blank_record(node: dict[str, Any]) -> dict[str, Any]:
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


def _bounded_int(value: Any, default: int, low: int, high: int) -> int:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return default
    return max(low, min(int(value), high))


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _elapsed_ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 3)
