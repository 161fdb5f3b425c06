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
respond), and node types registered ``inline`` (pure parsing such as
``repo.parse_coordinate``), run inline and are bounded cooperatively:
expression evaluation and ``NodeCall.sleep`` check the deadline, and a node
that returns after its deadline fails anyway. Nodes of any other category
(repository, auth: file and CPU work the engine cannot see into) run on a
daemon thread that the engine abandons at the deadline or on cancel, so a
stuck node never holds the worker. Python cannot kill a thread: an abandoned
node may still finish its side effect later (the artifact store's
write-once, rename-into-place records keep that consistent). Running such
nodes in a subprocess would lift this, at a cost of milliseconds per node.

The parts: ``worker.run_state`` holds a run's loop and state,
``worker.node_step`` one node's tries and body, ``worker.outcome`` the
statuses, limits and outcome; this module is the entry point and re-exports
their public names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loader.registry import NodeRegistry, load_registry
from worker.graph import WorkflowGraph
from worker.node_step import INLINE_CATEGORIES, load_implementations
from worker.nodes.base import Execution
from worker.outcome import EngineLimits, NodeStatus, OnError, RunOutcome, RunStatus
from worker.run_state import Observer, Run

__all__ = [
    "INLINE_CATEGORIES",
    "EngineLimits",
    "NodeStatus",
    "Observer",
    "OnError",
    "RunOutcome",
    "RunStatus",
    "load_implementations",
    "run_workflow",
]


def run_workflow(
    document: dict[str, Any],
    execution: Execution,
    *,
    registry: NodeRegistry | None = None,
    services: Any = None,
    observer: Observer | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    limits: EngineLimits | None = None,
    graph: WorkflowGraph | None = None,
) -> RunOutcome:
    """Run ``document`` for ``execution`` and say how it ended.

    ``observer("node", record)`` hears each node start and end, and
    ``observer("progress", {"done", "total"})`` after each node; an observer
    that raises is logged and ignored. ``is_cancelled()`` is asked before
    each node that would run (and while a node waits), so it should be cheap.

    A document that cannot be run at all (bad shape, cycle, unknown node
    type, bad variables) raises a ``PackageRepoError`` before any node runs;
    everything that goes wrong after that is in the outcome. ``graph``,
    when given, is ``WorkflowGraph.from_document(document)`` built before.
    """
    run = Run(
        graph=graph or WorkflowGraph.from_document(document),
        document=document,
        execution=execution,
        registry=registry or load_registry(),
        services=services,
        observer=observer,
        is_cancelled=is_cancelled,
        limits=limits or EngineLimits(),
    )
    return run.execute()
