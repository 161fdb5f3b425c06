"""Rules for the workflow's declared variables.

Variables are declared as an object keyed by name::

    "variables": {"limit": {"type": "number", "default": 10,
                            "description": "Most versions listed."}}

``type`` is one of ``string number boolean array object date any`` (default
``any``); a ``date`` is an ISO 8601 string. A default may be an expression
(``"{{ $vars.limit * 2 }}"``), whose type is only known when it runs; such
defaults are checked for syntax and references instead, and variables may
not refer to each other in a circle.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from loader.expressions import expressions_in, syntax_problem, variable_references
from loader.graph import find_cycle
from loader.problems import Problem, error

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def declared_variables(document: dict[str, Any]) -> dict[str, Any]:
    variables = document.get("variables")
    return variables if isinstance(variables, dict) else {}


def variable_problems(variables: dict[str, Any]) -> list[Problem]:
    """Name, default and reference problems of every declared variable."""
    problems: list[Problem] = []
    references: dict[str, list[str]] = {}
    for name, declaration in variables.items():
        path = ["variables", name]
        if not _NAME.match(name):
            problems.append(
                error(
                    "INVALID_VARIABLE_NAME",
                    path,
                    f"The variable name {name!r} is not an identifier.",
                )
            )
        if not isinstance(declaration, dict) or "default" not in declaration:
            continue

        default = declaration["default"]
        if isinstance(default, str) and "{{" in default:
            references[name] = _expression_default(default, path, variables, problems)
        else:
            problems.extend(_default_type_problems(declaration, default, path))

    problems.extend(_circular_problems(references))
    return problems


def _expression_default(
    default: str, path: list[Any], variables: dict[str, Any], problems: list[Problem]
) -> list[str]:
    where = [*path, "default"]
    bodies, unterminated = expressions_in(default)
    if unterminated:
        problems.append(
            error("INVALID_EXPRESSION", where, "An expression is not closed by }}.")
        )

    referenced: list[str] = []
    for body in bodies:
        reason = syntax_problem(body)
        if reason:
            problems.append(error("INVALID_EXPRESSION", where, reason))
        for name in variable_references(body):
            referenced.append(name)
            if name not in variables:
                problems.append(
                    error(
                        "UNKNOWN_VARIABLE_REFERENCE",
                        where,
                        f"The variable {name!r} is not declared.",
                    )
                )
    return referenced


def _default_type_problems(
    declaration: dict[str, Any], default: Any, path: list[Any]
) -> list[Problem]:
    declared = declaration.get("type", "any")
    if not isinstance(declared, str) or matches_type(default, declared):
        return []
    return [
        error(
            "VARIABLE_DEFAULT_TYPE",
            [*path, "default"],
            f"The default does not match the declared type {declared!r}.",
        )
    ]


def matches_type(value: Any, declared: str) -> bool:
    """Whether ``value`` is of the variable type ``declared``."""
    if declared == "string":
        return isinstance(value, str)
    if declared == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if declared == "boolean":
        return isinstance(value, bool)
    if declared == "array":
        return isinstance(value, list)
    if declared == "object":
        return isinstance(value, dict)
    if declared == "date":
        return isinstance(value, str) and _is_iso_date(value)
    # "any", and unknown types the schema already reported.
    return True


def _is_iso_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _circular_problems(references: dict[str, list[str]]) -> list[Problem]:
    problems: list[Problem] = []
    reported: set[str] = set()
    edges = {
        name: [ref for ref in refs if ref in references]
        for name, refs in references.items()
    }
    for name in references:
        if name in reported:
            continue
        cycle = find_cycle(name, edges)
        if not cycle:
            continue
        reported.update(cycle)
        circle = " -> ".join([*cycle, cycle[0]])
        problems.append(
            error(
                "CIRCULAR_VARIABLE",
                ["variables", name, "default"],
                f"Variable defaults refer to each other in a circle: {circle}.",
            )
        )
    return problems
