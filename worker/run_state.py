"""The state of one run: the loop over the nodes, their outputs and records.

``Run`` walks the graph in its topological order, decides which nodes run
or are skipped (design §4, summarised in ``worker.engine``), hands each node
that runs to ``NodeSteps`` and turns what happened into a ``RunOutcome``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from loader.limits import execution_timeout
from loader.registry import NodeRegistry
from packagerepo.errors import ExpressionFailed, InvalidWorkflow, WorkflowFailed
from worker.expressions import DEADLINE_PASSED, Built, ExpressionContext
from worker.graph import Edge, WorkflowGraph
from worker.node_step import NodeSteps, load_implementations, node_category
from worker.nodes.base import Cancelled, Execution, Item, Respond
from worker.nodes.trigger import input_item
from worker.outcome import (
    Ending,
    EngineLimits,
    NodeStatus,
    OnError,
    RunOutcome,
    RunStatus,
    blank_record,
    failed,
    result_problem,
    timeout_error,
)
from worker.variables import resolve_variables

logger = logging.getLogger(__name__)

Observer = Callable[[str, dict[str, Any]], None]


class Run:
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
        self.observer = observer
        self.cancel_check = is_cancelled
        self.limits = limits
        self._check_types()

        self.outputs: dict[str, list[list[Item]]] = {}
        self.error_items: dict[str, list[Item]] = {}
        self.items_by_node: dict[str, list[Item]] = {}
        self.held_fields = 0
        """Fields of the items in ``outputs`` and ``error_items``, at every
        depth, each object or list counted once however many items share it."""
        self._counted: set[int] = set()
        """``id`` of every object and list counted in ``held_fields``; all
        of them are held until the run ends, so no id is reused meanwhile."""
        self.records = {name: blank_record(graph.nodes[name]) for name in graph.order}
        self.done = 0

        self.started = time.monotonic()
        self.deadline = self.started + self._execution_timeout(document)
        self.log_context = (execution.tenant, execution.job_id)
        self.execution, context = self._bind_execution(document, execution)
        self.has_triggers = any(self._is_trigger(n) for n in graph.nodes.values())
        self.steps = NodeSteps(
            registry=registry,
            limits=limits,
            execution=self.execution,
            context=context,
            services=services,
            deadline=self.deadline,
            is_cancelled=self._cancel_requested,
            log_context=self.log_context,
        )

    # -- set-up

    def _check_types(self) -> None:
        implementations = load_implementations()
        for name, node in self.graph.nodes.items():
            if node["type"] not in implementations and not node.get("disabled"):
                raise InvalidWorkflow(
                    f"Node {name!r} has the type {node['type']!r}, which no worker "
                    "implements.",
                    code="UNKNOWN_NODE_TYPE",
                )

    def _execution_timeout(self, document: dict[str, Any]) -> float:
        return execution_timeout(
            document,
            default=self.limits.default_execution_timeout,
            maximum=self.limits.max_execution_timeout,
        )

    def _bind_execution(
        self, document: dict[str, Any], execution: Execution
    ) -> tuple[Execution, ExpressionContext]:
        """Resolve the variables, then build the run's expression context."""
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        built = Built()

        def context_for(variables: dict[str, Any]) -> ExpressionContext:
            return ExpressionContext(
                execution_id=execution.job_id,
                tenant=execution.tenant,
                job_input=execution.input,
                variables=variables,
                items_by_node=self.items_by_node,
                now=now,
                time_limit=self.limits.expression_time_limit,
                output_budget=self.limits.max_expression_chars_per_run,
                deadline=self.deadline,
                built=built,
            )

        try:
            variables = resolve_variables(
                document.get("variables"), execution.variables or {}, context_for
            )
        except ExpressionFailed as failed:
            if failed.code != DEADLINE_PASSED:
                raise
            timeout = timeout_error()
            raise WorkflowFailed(
                timeout["message"], code=timeout["code"], status=timeout["status"]
            ) from failed
        return replace(execution, variables=variables), context_for(variables)

    def _is_trigger(self, node: dict[str, Any]) -> bool:
        return node_category(self.registry, node["type"]) == "trigger"

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

    def _visit(self, name: str) -> Ending | None:
        """Skip or run one node; an ``Ending`` when the run stops here."""
        inputs = self._gather(name)
        if inputs is None:
            self._finish(name, NodeStatus.SKIPPED)
            return None

        if self._cancel_requested():
            self.records[name]["status"] = NodeStatus.CANCELLED.value
            return Ending(RunStatus.CANCELLED)
        if time.monotonic() >= self.deadline:
            return failed(timeout_error(), None)

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

    def _run_node(self, name: str, inputs: list[list[Item]]) -> Ending | None:
        node = self.graph.nodes[name]
        record = self.records[name]
        record["status"] = NodeStatus.RUNNING.value
        record["started_at"] = _utc_now()
        record["items_in"] = sum(len(items) for items in inputs)
        self._emit("node", dict(record))

        clock = time.monotonic()
        try:
            result = self.steps.attempts(node, inputs, record)
        except Cancelled:
            record["duration_ms"] = _elapsed_ms(clock)
            record["status"] = NodeStatus.CANCELLED.value
            self._emit("node", dict(record))
            return Ending(RunStatus.CANCELLED)
        record["duration_ms"] = _elapsed_ms(clock)

        if isinstance(result, dict):
            return self._node_failed(node, record, result)
        if isinstance(result, Respond):
            self._finish(name, NodeStatus.SUCCEEDED)
            return self._respond(name, result)

        too_much = self._hold(result.lists)
        if too_much is not None:
            return self._node_failed(node, record, too_much)
        self._store(name, result.lists)
        record["items_out"] = sum(len(items) for items in result.lists)
        self._finish(name, NodeStatus.SUCCEEDED)
        return None

    # -- after a node

    def _hold(self, lists: list[list[Item]]) -> dict[str, Any] | None:
        """Count the output's new fields against the run's cap; the error
        when keeping it would pass the cap (then nothing is kept)."""
        limit = self.limits.max_item_fields_per_run
        fields = _new_fields(lists, self._counted, limit - self.held_fields)
        if fields is None:
            return {
                "code": "ITEM_LIMIT_EXCEEDED",
                "message": f"The run's nodes would hold more than {limit} item "
                "fields together (nested ones included).",
                "status": 500,
            }
        self.held_fields += fields
        return None

    def _store(self, name: str, lists: list[list[Item]]) -> None:
        self.outputs[name] = lists
        if len(lists) == 1:
            self.items_by_node[name] = lists[0]
        else:
            self.items_by_node[name] = [item for items in lists for item in items]

    def _node_failed(
        self, node: dict[str, Any], record: dict[str, Any], error: dict[str, Any]
    ) -> Ending | None:
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

        if error["code"] == "EXECUTION_TIMEOUT":
            # The run's time is up: no node runs after this, whatever onError
            # says, and the run cannot end any other way.
            return failed(error, name)
        if on_error == OnError.CONTINUE_REGULAR_OUTPUT:
            self._store(name, [[{"error": error}]])
            record["items_out"] = 1
            return None
        if on_error == OnError.CONTINUE_ERROR_OUTPUT:
            self.error_items[name] = [{"error": error}]
            self.items_by_node[name] = self.error_items[name]
            record["items_out"] = 1
            return None
        return failed(error, name)

    def _respond(self, name: str, respond: Respond) -> Ending:
        if respond.status >= 400:
            error = {
                "code": respond.code or "WORKFLOW_ERROR",
                "message": respond.message or "The workflow answered with an error.",
                "status": respond.status,
            }
            return failed(error, name)

        problem = result_problem(respond.body, self.limits)
        if problem is not None:
            return failed(problem, name)
        return Ending(
            RunStatus.SUCCEEDED, result=respond.body, http_status=respond.status
        )

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

    def _outcome(self, ending: Ending | None) -> RunOutcome:
        if ending is None:
            ending = Ending(RunStatus.SUCCEEDED, result=self._ended_items())
        if ending.status == RunStatus.SUCCEEDED:
            # A respond node's body is checked like the ended items are.
            problem = result_problem(ending.result, self.limits)
            if problem is not None:
                ending = failed(problem, None)
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


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _elapsed_ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 3)


def _new_fields(lists: list[list[Item]], counted: set[int], room: int) -> int | None:
    """Fields (object keys and list elements, at any depth) of the objects
    and lists in ``lists`` not yet in ``counted``, which they join; None as
    soon as they pass ``room``. Iterative, and it stops early, so a huge
    output costs no more than the cap to count."""
    total = 0
    pending: list[Any] = [item for items in lists for item in items]
    while pending:
        value = pending.pop()
        if id(value) in counted:
            continue
        counted.add(id(value))
        total += len(value)
        if total > room:
            return None
        inner = value.values() if isinstance(value, dict) else value
        pending.extend(v for v in inner if isinstance(v, dict | list))
    return total
