"""Rules for each node: type and version, parameters, expressions, patterns.

A node whose type the registry holds is held to that type's parameter
schema, the parameter depth limit (an error), expression syntax and
variable references. A node of a type we do not ship (an n8n export checked
with ``--no-registry``, say) gets only the checks that make sense for
JavaScript expressions and n8n's deeper parameters: node references, and
depth as a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from loader.expressions import (
    expressions_in,
    node_references,
    strings_in,
    syntax_problem,
    variable_references,
)
from loader.problems import PathPart, Problem, error, field_path, warning
from loader.regexes import (
    MAX_PATTERN_CHARS_PER_DOCUMENT,
    PatternBudget,
    is_catastrophic,
    regex_problem,
)
from loader.registry import NodeRegistry
from loader.schema import CompiledSchema

NODE_ATTRIBUTES = ("name", "typeVersion", "position", "parameters")
_PATTERN_KEY = re.compile(r"pattern|regex", re.IGNORECASE)
_PARAMETER_SCHEMAS: dict[tuple[str, str], CompiledSchema] = {}


@dataclass(frozen=True)
class NodeContext:
    """What the per-node rules need to know about the rest of the document."""

    registry: NodeRegistry | None
    node_names: frozenset[str]
    variables: frozenset[str]
    max_parameter_depth: int
    patterns: PatternBudget = field(default_factory=PatternBudget)


def duplicate_problems(nodes: list[Any]) -> list[Problem]:
    """Nodes that repeat an earlier node's id or name."""
    problems: list[Problem] = []
    seen: dict[str, dict[Any, int]] = {"id": {}, "name": {}}
    for index, node in enumerate(nodes):
        if not isinstance(node, dict):
            continue
        for attribute, code in (
            ("id", "DUPLICATE_NODE_ID"),
            ("name", "DUPLICATE_NODE_NAME"),
        ):
            value = node.get(attribute)
            if not isinstance(value, str):
                continue
            first = seen[attribute].setdefault(value, index)
            if first != index:
                problems.append(
                    error(
                        code,
                        ["nodes", index, attribute],
                        f"The {attribute} {value!r} is already used by nodes[{first}].",
                    )
                )
    return problems


def node_problems(node: Any, index: int, context: NodeContext) -> list[Problem]:
    """Every problem of one node, given the rest of the document."""
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return []

    path: list[PathPart] = ["nodes", index]
    problems: list[Problem] = []
    description = _description(node, path, context, problems)
    parameters = node.get("parameters")
    if not isinstance(parameters, dict):
        return problems

    where = [*path, "parameters"]
    misplaced = [key for key in NODE_ATTRIBUTES if key in parameters]
    for key in misplaced:
        problems.append(
            error(
                "NODE_ATTRIBUTE_IN_PARAMETERS",
                [*where, key],
                f"{key!r} is a node attribute; it belongs beside 'parameters', "
                "not inside it.",
            )
        )

    problems.extend(_depth_problems(parameters, where, description, context))
    if description is not None:
        problems.extend(
            _parameter_schema_problems(
                node["type"],
                description,
                parameters,
                where,
                context,
                frozenset(misplaced),
            )
        )
    problems.extend(_string_problems(parameters, where, description, context))
    return problems


def _description(
    node: dict[str, Any],
    path: list[PathPart],
    context: NodeContext,
    problems: list[Problem],
) -> dict[str, Any] | None:
    if context.registry is None:
        return None

    node_type = node["type"]
    description = context.registry.get(node_type)
    if description is None:
        problems.append(
            error(
                "UNKNOWN_NODE_TYPE",
                [*path, "type"],
                f"The node type {node_type!r} is not in the node registry.",
            )
        )
        return None

    version = node.get("typeVersion")
    versions = description.get("versions", [])
    if _is_number(version) and version >= 0 and version not in versions:
        problems.append(
            error(
                "UNSUPPORTED_TYPE_VERSION",
                [*path, "typeVersion"],
                f"{node_type!r} supports typeVersion {versions}, not {version}.",
            )
        )
    return description


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _depth_problems(
    parameters: dict[str, Any],
    where: list[PathPart],
    description: dict[str, Any] | None,
    context: NodeContext,
) -> list[Problem]:
    """The first value nested beyond the limit, if any.

    ``parameters.a`` is level 1, ``parameters.a.b`` level 2 and so on; list
    items count as a level. Iterative, depth-first.
    """
    limit = context.max_parameter_depth
    stack: list[tuple[Any, list[PathPart]]] = [(parameters, [])]
    while stack:
        current, relative = stack.pop()
        if isinstance(current, dict):
            children = list(current.items())
        elif isinstance(current, list):
            children = list(enumerate(current))
        else:
            continue
        for key, child in children:
            level = [*relative, key]
            if len(level) > limit:
                make = error if description is not None else warning
                return [
                    make(
                        "PARAMETER_TOO_DEEP",
                        [*where, *level],
                        f"Parameters nest {len(level)} levels deep here; the "
                        f"limit is {limit}. Use an expression or flatten the value.",
                    )
                ]
            stack.append((child, level))
    return []


def _parameter_schema_problems(
    node_type: str,
    description: dict[str, Any],
    parameters: dict[str, Any],
    where: list[PathPart],
    context: NodeContext,
    misplaced: frozenset[str],
) -> list[Problem]:
    schema = description.get("parameters")
    if not isinstance(schema, dict) or context.registry is None:
        return []

    cache_key = (context.registry.digest, node_type)
    compiled = _PARAMETER_SCHEMAS.get(cache_key)
    if compiled is None:
        compiled = _PARAMETER_SCHEMAS[cache_key] = CompiledSchema.of(schema)
    return compiled.problems(
        parameters, where, default_code="PARAMETER_SCHEMA", ignore_keys=misplaced
    )


def _string_problems(
    parameters: dict[str, Any],
    where: list[PathPart],
    description: dict[str, Any] | None,
    context: NodeContext,
) -> list[Problem]:
    problems: list[Problem] = []
    regex_keys = _regex_parameters(description)
    for path, text in strings_in(parameters, where):
        if "{{" in text:
            problems.extend(_expression_problems(text, path, description, context))
        elif path[len(where) :] and _is_pattern(path, where, regex_keys):
            problems.extend(_regex_problems(text, path, description, context))
    return problems


def _regex_parameters(description: dict[str, Any] | None) -> frozenset[str]:
    """Parameters the registry schema marks with ``"format": "regex"``."""
    if description is None:
        return frozenset()
    properties = (description.get("parameters") or {}).get("properties") or {}
    return frozenset(
        name
        for name, schema in properties.items()
        if isinstance(schema, dict) and schema.get("format") == "regex"
    )


def _is_pattern(
    path: list[PathPart], where: list[PathPart], regex_keys: frozenset[str]
) -> bool:
    relative = path[len(where) :]
    if relative[0] in regex_keys:
        return True
    keys = [part for part in relative if isinstance(part, str)]
    return bool(keys) and bool(_PATTERN_KEY.search(keys[-1]))


def _expression_problems(
    text: str,
    path: list[PathPart],
    description: dict[str, Any] | None,
    context: NodeContext,
) -> list[Problem]:
    problems: list[Problem] = []
    bodies, unterminated = expressions_in(text)
    ours = description is not None
    if ours and unterminated:
        problems.append(
            error("INVALID_EXPRESSION", path, "An expression is not closed by }}.")
        )

    for body in bodies:
        refused = syntax_problem(body) if ours else None
        if refused:
            problems.append(error(refused.code, path, refused.message))
        for name in node_references(body):
            if name not in context.node_names:
                problems.append(
                    error(
                        "UNKNOWN_NODE_REFERENCE",
                        path,
                        f"The expression reads node {name!r}, which does not exist.",
                    )
                )
        if not ours:
            # n8n's $vars are instance variables, not declared in the workflow.
            continue
        for name in variable_references(body):
            if name not in context.variables:
                problems.append(
                    error(
                        "UNKNOWN_VARIABLE_REFERENCE",
                        path,
                        f"The expression reads variable {name!r}, which is not "
                        "declared.",
                    )
                )
    return problems


def _regex_problems(
    pattern: str,
    path: list[PathPart],
    description: dict[str, Any] | None,
    context: NodeContext,
) -> list[Problem]:
    if not context.patterns.take(pattern):
        message = (
            f"The document's patterns pass {MAX_PATTERN_CHARS_PER_DOCUMENT} "
            "characters in all; this one was not compiled."
        )
        return (
            [error("INVALID_REGEX", path, message)] if description is not None else []
        )
    reason = regex_problem(pattern)
    if reason:
        # n8n patterns may be JavaScript (/x/i); only ours must compile here.
        return [error("INVALID_REGEX", path, reason)] if description is not None else []
    if is_catastrophic(pattern):
        return [
            warning(
                "CATASTROPHIC_REGEX",
                path,
                f"The pattern at {field_path(path)} nests unbounded repeats and "
                "may backtrack catastrophically on some input.",
            )
        ]
    return []
