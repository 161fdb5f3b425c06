"""``validate``: every rule of design §3 over one parsed document.

The order matters for hostile input: depth and node count are checked first
and end the run with one coded error, before any walk that would scale with
them. Structure (the JSON Schema) runs next; the node, expression, variable
and graph rules run after it on whatever parts are well-formed, so one
report lists every problem at once.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from loader.document import MAX_DEPTH, ParsedDocument, depth_of, normalise_connections
from loader.graph import (
    Graph,
    connection_problems,
    cycle_problems,
    node_error_output_problems,
    unreachable_problems,
)
from loader.nodes import NodeContext, duplicate_problems, node_problems
from loader.problems import PathPart, Problem, Report, error
from loader.registry import NodeRegistry, load_registry
from loader.schema import structural_problems
from loader.variables import declarations, variable_problems

logger = logging.getLogger(__name__)

MAX_NODES = 2000
OBJECT_OBJECT = "[object Object]"


def validate(
    document: dict[str, Any],
    *,
    registry: NodeRegistry | None = None,
    use_registry: bool = True,
    tenant: str | None = None,
    strict: bool = False,
    max_parameter_depth: int = 2,
) -> Report:
    """Check ``document`` against every rule and report all problems at once.

    Without ``registry`` the process's registry is used; ``use_registry=False``
    checks structure and graph only, for node types we do not ship. A legacy
    connection encoding is normalised in place (with a warning).
    """
    problems = _hostile_shape_problems(document)
    if problems:
        return Report.of(problems, strict=strict)

    if use_registry and registry is None:
        registry = load_registry()
    active_registry = registry if use_registry else None

    problems = list(getattr(document, "notes", ()))
    problems.extend(normalise_connections(document))
    problems.extend(structural_problems(document))
    problems.extend(_object_object_problems(document))
    problems.extend(_tenant_problems(document, tenant))
    problems.extend(_semantic_problems(document, active_registry, max_parameter_depth))
    return Report.of(problems, strict=strict)


def _hostile_shape_problems(document: Any) -> list[Problem]:
    """The one problem that stops validation early, if any."""
    if not isinstance(document, dict):
        return [
            error("NOT_AN_OBJECT", [], "The top level of a workflow must be an object.")
        ]

    already_checked = isinstance(document, ParsedDocument) and document.depth_checked
    if not already_checked and depth_of(document, MAX_DEPTH) > MAX_DEPTH:
        return [
            error(
                "DOCUMENT_TOO_DEEP",
                [],
                f"The document nests deeper than {MAX_DEPTH} levels.",
            )
        ]

    nodes = document.get("nodes")
    if isinstance(nodes, list) and len(nodes) > MAX_NODES:
        return [
            error(
                "TOO_MANY_NODES",
                ["nodes"],
                f"The workflow has {len(nodes)} nodes; the cap is {MAX_NODES}.",
            )
        ]
    return []


def _object_object_problems(document: dict[str, Any]) -> list[Problem]:
    """Values that are exactly "[object Object]", wherever they are.

    A serialised search is a cheap filter: only a document that contains the
    quoted string is walked for paths.
    """
    if json.dumps(OBJECT_OBJECT) not in json.dumps(document, ensure_ascii=False):
        return []

    problems: list[Problem] = []
    stack: list[tuple[Any, list[PathPart]]] = [(document, [])]
    while stack:
        current, path = stack.pop()
        if current == OBJECT_OBJECT:
            problems.append(
                error(
                    "OBJECT_OBJECT_VALUE",
                    path,
                    'The value is the string "[object Object]": an object was '
                    "turned into text somewhere and its content is lost.",
                )
            )
        elif isinstance(current, dict):
            stack.extend((child, [*path, key]) for key, child in current.items())
        elif isinstance(current, list):
            stack.extend((child, [*path, i]) for i, child in enumerate(current))
    return sorted(problems, key=lambda problem: problem.field)


def _tenant_problems(document: dict[str, Any], tenant: str | None) -> list[Problem]:
    declared = document.get("tenantId")
    if tenant is None or not isinstance(declared, str) or declared == tenant:
        return []
    return [
        error(
            "TENANT_MISMATCH",
            ["tenantId"],
            f"The workflow belongs to tenant {declared!r}, not to the caller's "
            f"tenant {tenant!r}.",
        )
    ]


def _semantic_problems(
    document: dict[str, Any], registry: NodeRegistry | None, max_parameter_depth: int
) -> list[Problem]:
    nodes = document.get("nodes")
    nodes = nodes if isinstance(nodes, list) else []
    graph = Graph.of(document)
    variables = declarations(document)
    context = NodeContext(
        registry=registry,
        node_names=frozenset(graph.nodes),
        variables=frozenset(declaration.name for declaration in variables),
        max_parameter_depth=max_parameter_depth,
    )

    problems = duplicate_problems(nodes)
    for index, node in enumerate(nodes):
        problems.extend(node_problems(node, index, context))
    problems.extend(variable_problems(variables))
    problems.extend(connection_problems(document, graph, registry))
    problems.extend(node_error_output_problems(graph, registry))
    problems.extend(cycle_problems(graph))
    problems.extend(unreachable_problems(graph, registry))
    problems.extend(_system_scope_problems(document, nodes, registry))
    return problems


def _system_scope_problems(
    document: dict[str, Any], nodes: list[Any], registry: NodeRegistry | None
) -> list[Problem]:
    """System nodes report on the server and clean its shared storage: only
    a workflow that takes an admin to run may hold one."""
    settings = document.get("settings")
    scope = settings.get("scope", "read") if isinstance(settings, dict) else "read"
    if registry is None or scope == "admin":
        return []
    problems = []
    for index, node in enumerate(nodes):
        node_type = node.get("type") if isinstance(node, dict) else None
        description = registry.get(node_type) if isinstance(node_type, str) else None
        if description is not None and description.get("category") == "system":
            problems.append(
                error(
                    "SYSTEM_NODE_NEEDS_ADMIN",
                    ["nodes", index, "type"],
                    f"Node {node.get('name')!r} is a system node ({node_type}); "
                    "a workflow with one must declare settings.scope admin.",
                )
            )
    return problems
