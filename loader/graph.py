"""Graph rules: connections, indices, error outputs, cycles, reachability.

Connections are keyed by the source node's name; ``main[i]`` is output
*i*, ``error[0]`` the error output. Every walk here is iterative, so a
workflow with thousands of nodes cannot exhaust the call stack.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from loader.problems import PathPart, Problem, error, field_path, warning
from loader.registry import NodeRegistry

OUTPUT_TYPES = ("main", "error")


@dataclass
class Graph:
    """The workflow's nodes by name and the edges its connections draw."""

    nodes: dict[str, tuple[int, dict[str, Any]]]
    names_by_id: dict[str, str]
    edges: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, document: dict[str, Any]) -> Graph:
        nodes: dict[str, tuple[int, dict[str, Any]]] = {}
        names_by_id: dict[str, str] = {}
        raw_nodes = document.get("nodes")
        for index, node in enumerate(raw_nodes if isinstance(raw_nodes, list) else []):
            if not isinstance(node, dict):
                continue
            name, node_id = node.get("name"), node.get("id")
            if isinstance(name, str):
                nodes.setdefault(name, (index, node))
                if isinstance(node_id, str):
                    names_by_id.setdefault(node_id, name)
        return cls(nodes, names_by_id, {name: [] for name in nodes})


def type_of(node: dict[str, Any]) -> str:
    """The node's type, or "" when it is missing or not a string."""
    node_type = node.get("type")
    return node_type if isinstance(node_type, str) else ""


def connection_problems(
    document: dict[str, Any], graph: Graph, registry: NodeRegistry | None
) -> list[Problem]:
    """Problems of every connection; fills ``graph.edges`` as it goes."""
    connections = document.get("connections")
    if not isinstance(connections, dict):
        return []

    problems: list[Problem] = []
    for source, outputs in connections.items():
        path: list[PathPart] = ["connections", source]
        if source not in graph.nodes:
            problems.append(_unknown_node(source, path, graph, "source"))
        if not isinstance(outputs, dict):
            continue
        for output_type, lists in outputs.items():
            if isinstance(lists, list):
                problems.extend(
                    _output_problems(source, output_type, lists, graph, registry)
                )
    return problems


def _unknown_node(name: str, path: list[PathPart], graph: Graph, role: str) -> Problem:
    if name in graph.names_by_id:
        owner = graph.names_by_id[name]
        return error(
            "ID_KEYED_CONNECTION",
            path,
            f"The connection {role} {name!r} is the id of node {owner!r}; "
            f"connections name nodes by name, so use {owner!r}.",
        )
    code = (
        "UNKNOWN_CONNECTION_SOURCE" if role == "source" else "UNKNOWN_CONNECTION_TARGET"
    )
    return error(code, path, f"The connection {role} {name!r} is not a node name.")


def _output_problems(
    source: str,
    output_type: str,
    lists: list[Any],
    graph: Graph,
    registry: NodeRegistry | None,
) -> Iterator[Problem]:
    path: list[PathPart] = ["connections", source, output_type]
    if output_type not in OUTPUT_TYPES:
        yield error(
            "INVALID_OUTPUT_TYPE",
            path,
            f"The output type {output_type!r} is neither 'main' nor 'error'.",
        )
        return

    known = graph.nodes.get(source)
    limit = _output_limit(known[1], output_type, registry) if known else None
    for index, targets in enumerate(lists):
        if not isinstance(targets, list) or not targets:
            continue
        if limit is not None and index >= limit:
            yield error(
                "INVALID_OUTPUT_INDEX",
                [*path, index],
                f"Node {source!r} has {limit} {output_type} output(s); "
                f"index {index} does not exist.",
            )
        if output_type == "error" and known:
            yield from _error_output_problems(source, known[1], path, registry)
        yield from _targets_problems(source, targets, [*path, index], graph, registry)


def _targets_problems(
    source: str,
    targets: list[Any],
    path: list[PathPart],
    graph: Graph,
    registry: NodeRegistry | None,
) -> Iterator[Problem]:
    """Problems of the targets of one output, repeats included.

    The engine delivers an output once per entry, so a repeated entry
    multiplies the items the target receives.
    """
    first_at: dict[tuple[str, int], int] = {}
    for position, target in enumerate(targets):
        if not isinstance(target, dict):
            continue
        where = [*path, position]
        first = _first_of_repeat(target, position, first_at)
        if first is None:
            yield from _target_problems(source, target, where, graph, registry)
            continue
        # The first entry already had its other problems reported, its edge drawn.
        yield error(
            "DUPLICATE_CONNECTION",
            where,
            f"The connection from {source!r} {field_path(path[2:])} to "
            f"{target['node']!r} input {target['index']} repeats "
            f"{field_path([*path, first])}.",
        )


def _first_of_repeat(
    target: dict[str, Any], position: int, first_at: dict[tuple[str, int], int]
) -> int | None:
    """The position of the earlier entry ``target`` repeats, if any."""
    name, index = target.get("node"), target.get("index")
    if not isinstance(name, str) or type(index) is not int:
        return None
    first = first_at.setdefault((name, index), position)
    return first if first != position else None


def _output_limit(
    node: dict[str, Any], output_type: str, registry: NodeRegistry | None
) -> int | None:
    if output_type == "error":
        return 1
    if registry is None or registry.get(type_of(node)) is None:
        return None
    if not isinstance(node.get("parameters", {}), dict):
        # The schema reports it; a count from list parameters cannot be read.
        return None
    return registry.output_count(node)


def _error_output_problems(
    source: str,
    node: dict[str, Any],
    path: list[PathPart],
    registry: NodeRegistry | None,
) -> Iterator[Problem]:
    if node.get("onError") != "continueErrorOutput":
        yield error(
            "ERROR_OUTPUT_WITHOUT_CONTINUE",
            path,
            f"Node {source!r} has an error output wired but its onError is not "
            "'continueErrorOutput', so nothing would ever leave it.",
        )
    node_type = type_of(node)
    if (
        registry is not None
        and registry.get(node_type) is not None
        and not registry.has_error_output(node_type)
    ):
        yield error(
            "ERROR_OUTPUT_UNSUPPORTED",
            path,
            f"Node type {node_type!r} has no error output.",
        )


def _target_problems(
    source: str,
    target: dict[str, Any],
    path: list[PathPart],
    graph: Graph,
    registry: NodeRegistry | None,
) -> Iterator[Problem]:
    name = target.get("node")
    if not isinstance(name, str):
        return
    if name not in graph.nodes:
        yield _unknown_node(name, [*path, "node"], graph, "target")
    elif name == source:
        yield error(
            "SELF_LOOP", [*path, "node"], f"Node {name!r} is connected to itself."
        )
    elif source in graph.edges:
        graph.edges[source].append(name)

    if "type" in target and target["type"] != "main":
        yield error(
            "INVALID_OUTPUT_TYPE",
            [*path, "type"],
            f"The input type {target['type']!r} is not 'main'.",
        )
    yield from _input_index_problems(
        name, target.get("index"), [*path, "index"], graph, registry
    )


def _input_index_problems(
    name: str,
    index: Any,
    path: list[PathPart],
    graph: Graph,
    registry: NodeRegistry | None,
) -> Iterator[Problem]:
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        yield error(
            "INVALID_INPUT_INDEX",
            path,
            "The input index must be a non-negative integer.",
        )
        return

    known = graph.nodes.get(name)
    if known is None or registry is None:
        return
    inputs = registry.input_count(type_of(known[1]))
    if inputs is not None and index >= inputs:
        yield error(
            "INVALID_INPUT_INDEX",
            path,
            f"Node {name!r} has {inputs} input(s); index {index} does not exist.",
        )


def node_error_output_problems(
    graph: Graph, registry: NodeRegistry | None
) -> list[Problem]:
    """Nodes that continue on an error output their type does not have."""
    if registry is None:
        return []
    problems: list[Problem] = []
    for name, (index, node) in graph.nodes.items():
        node_type = type_of(node)
        if (
            node.get("onError") == "continueErrorOutput"
            and registry.get(node_type) is not None
            and not registry.has_error_output(node_type)
        ):
            problems.append(
                error(
                    "ERROR_OUTPUT_UNSUPPORTED",
                    ["nodes", index, "onError"],
                    f"Node {name!r} continues on an error output, but type "
                    f"{node_type!r} has none.",
                )
            )
    return problems


def cycle_problems(graph: Graph) -> list[Problem]:
    """One ``CYCLE`` problem per strongly connected group of nodes, naming a cycle."""
    problems: list[Problem] = []
    for component in strongly_connected(graph.edges):
        if len(component) < 2:
            continue
        members = set(component)
        first = min(component, key=lambda name: graph.nodes[name][0])
        inside = {
            name: [t for t in graph.edges[name] if t in members] for name in component
        }
        cycle = find_cycle(first, inside) or component
        circle = " -> ".join([*cycle, cycle[0]])
        problems.append(
            error(
                "CYCLE",
                ["connections", first],
                f"Connections form a cycle: {circle}.",
            )
        )
    return problems


def unreachable_problems(graph: Graph, registry: NodeRegistry | None) -> list[Problem]:
    """Warnings for nodes no path reaches from a trigger (or, lacking one, a root)."""
    roots = [
        name for name, (_, node) in graph.nodes.items() if _is_trigger(node, registry)
    ]
    if not roots:
        targets = {target for targets in graph.edges.values() for target in targets}
        roots = [name for name in graph.nodes if name not in targets]

    reached = set(roots)
    queue = deque(roots)
    while queue:
        for target in graph.edges.get(queue.popleft(), []):
            if target not in reached:
                reached.add(target)
                queue.append(target)

    return [
        warning(
            "UNREACHABLE_NODE",
            ["nodes", index],
            f"Node {name!r} is not reachable from a trigger; it would never run.",
        )
        for name, (index, _) in graph.nodes.items()
        if name not in reached
    ]


def _is_trigger(node: dict[str, Any], registry: NodeRegistry | None) -> bool:
    node_type = node.get("type")
    if not isinstance(node_type, str):
        return False
    description = registry.get(node_type) if registry is not None else None
    if description is not None:
        return description.get("category") == "trigger"
    # n8n's own trigger types: manualTrigger, scheduleTrigger, webhook, start.
    last = node_type.rsplit(".", 1)[-1].lower()
    return last.endswith("trigger") or last in {"start", "webhook"}


def find_cycle(start: str, edges: dict[str, list[str]]) -> list[str] | None:
    """A shortest path from ``start`` back to itself, without the closing step."""
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        for target in edges.get(current, []):
            if target == start:
                return _path_to(current, parents)
            if target not in parents:
                parents[target] = current
                queue.append(target)
    return None


def _path_to(last: str, parents: dict[str, str | None]) -> list[str]:
    path = [last]
    while (parent := parents[path[-1]]) is not None:
        path.append(parent)
    return path[::-1]


def strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0

    for root in edges:
        if root in index_of:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            name, child = work.pop()
            if child == 0:
                index_of[name] = low[name] = counter
                counter += 1
                stack.append(name)
                on_stack.add(name)
            targets = edges.get(name, [])
            if child < len(targets):
                work.append((name, child + 1))
                target = targets[child]
                if target not in index_of:
                    work.append((target, 0))
                elif target in on_stack:
                    low[name] = min(low[name], index_of[target])
                continue
            for target in targets:
                if target in on_stack:
                    low[name] = min(low[name], low[target])
            if low[name] == index_of[name]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == name:
                        break
                components.append(component)
    return components
