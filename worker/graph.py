"""A workflow document's nodes and connections as a checked, ordered graph.

Connections are keyed by the source node's name (design §3); ``main[i]`` is
output *i* and ``error[0]`` is the error output. The order is Kahn's
topological sort, taking the ready node that comes first in the document, so
the same document always runs in the same order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from packagerepo.errors import InvalidWorkflow


@dataclass(frozen=True)
class Edge:
    """One connection: ``source``'s output (``kind``, ``output``) feeds
    ``target``'s input ``input``."""

    source: str
    kind: str
    output: int
    target: str
    input: int


@dataclass(frozen=True)
class WorkflowGraph:
    """The nodes and connections of a document, checked and ordered."""

    nodes: dict[str, dict[str, Any]]
    order: tuple[str, ...]
    incoming: dict[str, tuple[Edge, ...]]
    outgoing: dict[str, tuple[Edge, ...]]

    @classmethod
    def from_document(cls, document: Any) -> WorkflowGraph:
        """Build the graph; a malformed document raises InvalidWorkflow."""
        if not isinstance(document, dict):
            raise InvalidWorkflow("The workflow document is not an object.")
        nodes = _nodes_by_name(document.get("nodes"))
        edges = _edges(document.get("connections") or {}, nodes)

        incoming: dict[str, list[Edge]] = {name: [] for name in nodes}
        outgoing: dict[str, list[Edge]] = {name: [] for name in nodes}
        for edge in edges:
            incoming[edge.target].append(edge)
            outgoing[edge.source].append(edge)
        return cls(
            nodes=nodes,
            order=_topological_order(list(nodes), outgoing),
            incoming={name: tuple(found) for name, found in incoming.items()},
            outgoing={name: tuple(found) for name, found in outgoing.items()},
        )


def _nodes_by_name(nodes: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(nodes, list) or not nodes:
        raise InvalidWorkflow("The workflow has no list of nodes.")

    by_name: dict[str, dict[str, Any]] = {}
    for position, node in enumerate(nodes):
        name = node.get("name") if isinstance(node, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidWorkflow(f"Node {position} of the workflow has no name.")
        if name in by_name:
            raise InvalidWorkflow(f"Two nodes of the workflow are named {name!r}.")
        if not isinstance(node.get("type"), str):
            raise InvalidWorkflow(f"Node {name!r} has no type.")
        by_name[name] = node
    return by_name


def _edges(connections: Any, nodes: dict[str, Any]) -> list[Edge]:
    if not isinstance(connections, dict):
        raise InvalidWorkflow("The workflow's connections are not an object.")

    edges = []
    for source, kinds in connections.items():
        if source not in nodes or not isinstance(kinds, dict):
            raise InvalidWorkflow(f"Connections come from {source!r}, not a node.")
        for kind, outputs in kinds.items():
            if kind not in ("main", "error") or not isinstance(outputs, list):
                raise InvalidWorkflow(f"Node {source!r} has an output {kind!r}.")
            for output, targets in enumerate(outputs):
                edges.extend(_targets(source, kind, output, targets, nodes))
    return edges


def _targets(
    source: str, kind: str, output: int, targets: Any, nodes: dict[str, Any]
) -> list[Edge]:
    if targets is None:
        return []
    if not isinstance(targets, list):
        raise InvalidWorkflow(f"Output {kind}[{output}] of {source!r} is not a list.")

    edges = []
    for target in targets:
        name = target.get("node") if isinstance(target, dict) else None
        index = target.get("index", 0) if isinstance(target, dict) else None
        if name not in nodes:
            raise InvalidWorkflow(f"Node {source!r} connects to {name!r}, not a node.")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise InvalidWorkflow(f"Node {source!r} connects to a bad input index.")
        edges.append(Edge(source, kind, output, name, index))
    return edges


def _topological_order(
    names: list[str], outgoing: dict[str, list[Edge]]
) -> tuple[str, ...]:
    """Kahn's algorithm, always taking the ready node earliest in the document."""
    position = {name: index for index, name in enumerate(names)}
    successors = {name: {edge.target for edge in outgoing[name]} for name in names}
    waiting = dict.fromkeys(names, 0)
    for targets in successors.values():
        for target in targets:
            waiting[target] += 1

    ready = [position[name] for name in names if waiting[name] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for target in successors[name]:
            waiting[target] -= 1
            if waiting[target] == 0:
                heapq.heappush(ready, position[target])

    if len(order) < len(names):
        looped = sorted(set(names) - set(order), key=position.__getitem__)
        raise InvalidWorkflow(f"The workflow's connections form a cycle: {looped}.")
    return tuple(order)
