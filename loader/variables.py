"""Rules for the workflow's declared variables.

Variables are declared as an object keyed by name::

    "variables": {"limit": {"type": "number", "default": 10,
                            "description": "Most versions listed."}}

or, as the engine also reads them, as a list of named declarations::

    "variables": [{"name": "limit", "type": "number", "default": 10}]

``type`` is one of ``string number boolean array object date any`` (default
``any``); a ``date`` is an ISO 8601 string. A default may be an expression
(``"{{ $vars.limit * 2 }}"``), whose type is only known when it runs; such
defaults are checked for syntax and references instead, and variables may
not refer to each other in a circle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loader.expressions import expressions_in, syntax_problem, variable_references
from loader.graph import find_cycle
from loader.problems import PathPart, Problem, error, field_path

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Declaration:
    """One declared variable and where its declaration and its name sit."""

    name: str
    value: Any
    path: list[PathPart]
    name_path: list[PathPart]


def declarations(document: dict[str, Any]) -> list[Declaration]:
    """The variables the document declares, in either form, in order.

    List entries without a string name are left to the schema to report.
    """
    variables = document.get("variables")
    if isinstance(variables, dict):
        return [
            Declaration(name, value, ["variables", name], ["variables", name])
            for name, value in variables.items()
        ]
    if not isinstance(variables, list):
        return []
    return [
        Declaration(entry["name"], entry, ["variables", i], ["variables", i, "name"])
        for i, entry in enumerate(variables)
        if isinstance(entry, dict) and isinstance(entry.get("name"), str)
    ]


def variable_problems(declared: list[Declaration]) -> list[Problem]:
    """Name, default and reference problems of every declared variable."""
    problems: list[Problem] = []
    names = {declaration.name for declaration in declared}
    first_at: dict[str, Declaration] = {}
    references: dict[str, list[str]] = {}
    default_paths: dict[str, list[PathPart]] = {}
    for declaration in declared:
        problems.extend(_name_problems(declaration, first_at))
        value = declaration.value
        if not isinstance(value, dict) or "default" not in value:
            continue

        default, where = value["default"], [*declaration.path, "default"]
        if isinstance(default, str) and "{{" in default:
            # The engine keeps the last of repeated names; so does the cycle check.
            references[declaration.name] = _expression_default(
                default, where, names, problems
            )
            default_paths[declaration.name] = where
        else:
            problems.extend(_default_type_problems(value, default, where))

    problems.extend(_circular_problems(references, default_paths))
    return problems


def _name_problems(
    declaration: Declaration, first_at: dict[str, Declaration]
) -> list[Problem]:
    name, path = declaration.name, declaration.name_path
    first = first_at.setdefault(name, declaration)
    if first is not declaration:
        return [
            error(
                "DUPLICATE_VARIABLE_NAME",
                path,
                f"The variable {name!r} is already declared at "
                f"{field_path(first.path)}.",
            )
        ]
    if not _NAME.match(name):
        return [
            error(
                "INVALID_VARIABLE_NAME",
                path,
                f"The variable name {name!r} is not an identifier.",
            )
        ]
    return []


def _expression_default(
    default: str, where: list[PathPart], names: set[str], problems: list[Problem]
) -> list[str]:
    bodies, unterminated = expressions_in(default)
    if unterminated:
        problems.append(
            error("INVALID_EXPRESSION", where, "An expression is not closed by }}.")
        )

    referenced: list[str] = []
    for body in bodies:
        refused = syntax_problem(body)
        if refused:
            problems.append(error(refused.code, where, refused.message))
        for name in variable_references(body):
            referenced.append(name)
            if name not in names:
                problems.append(
                    error(
                        "UNKNOWN_VARIABLE_REFERENCE",
                        where,
                        f"The variable {name!r} is not declared.",
                    )
                )
    return referenced


def _default_type_problems(
    declaration: dict[str, Any], default: Any, where: list[PathPart]
) -> list[Problem]:
    declared = declaration.get("type", "any")
    if not isinstance(declared, str) or matches_type(default, declared):
        return []
    return [
        error(
            "VARIABLE_DEFAULT_TYPE",
            where,
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


def _circular_problems(
    references: dict[str, list[str]], default_paths: dict[str, list[PathPart]]
) -> list[Problem]:
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
                default_paths[name],
                f"Variable defaults refer to each other in a circle: {circle}.",
            )
        )
    return problems
