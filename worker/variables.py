"""Workflow variables: declarations, typed defaults, overrides, ``$vars``.

``document["variables"]`` is an object of name → ``{"type", "default"}``
(the loader's form) or a list of ``{"name", "type", "default"}``. Types are
``string number boolean array object date any``; a default may be a
template that refers to other variables, the job input or the execution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from packagerepo.errors import WorkflowFailed
from worker.expressions import ExpressionContext, find_templates, template_references

VARIABLE_TYPES = ("string", "number", "boolean", "array", "object", "date", "any")


def variable_declarations(declared: Any) -> dict[str, dict[str, Any]]:
    """Normalise ``document["variables"]`` to ``{name: {"type", "default"}}``.

    Accepts a dict of name → declaration (or → plain default value) and a
    list of ``{"name", "type", "default"}``.
    """
    if not declared:
        return {}
    if isinstance(declared, list):
        entries = [
            (entry.get("name"), entry) for entry in declared if isinstance(entry, dict)
        ]
    elif isinstance(declared, dict):
        entries = list(declared.items())
    else:
        raise WorkflowFailed(
            "The workflow's variables are neither a list nor an object.",
            code="INVALID_VARIABLE",
        )

    declarations = {}
    for name, entry in entries:
        if not isinstance(name, str) or not name:
            raise WorkflowFailed(
                "A workflow variable has no name.", code="INVALID_VARIABLE"
            )
        is_declaration = isinstance(entry, dict) and (
            "type" in entry or "default" in entry
        )
        declarations[name] = {
            "type": entry.get("type", "any") if is_declaration else "any",
            "default": entry.get("default") if is_declaration else entry,
        }
    return declarations


def coerce_variable(name: str, kind: str, value: Any) -> Any:
    """``value`` as the declared ``kind``, or WorkflowFailed INVALID_VARIABLE.

    Text is accepted for numbers and booleans ("42", "true") since overrides
    often arrive as strings; ``date`` must be ISO-8601 text.
    """
    if value is None or kind == "any":
        return value

    coerced = _COERCIONS.get(kind, _reject)(value)
    if coerced is _INVALID:
        raise WorkflowFailed(
            f"Variable {name!r} should be of type {kind} but is {value!r:.80}.",
            code="INVALID_VARIABLE",
            status=400,
        )
    return coerced


_INVALID = object()


def _reject(value: Any) -> Any:
    return _INVALID


def _to_number(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return _INVALID
        if math.isfinite(number):
            return int(number) if number.is_integer() and "." not in value else number
    return _INVALID


def _to_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str) else None
    return {"true": True, "false": False}.get(text, _INVALID)  # type: ignore[arg-type]


def _to_date(value: Any) -> Any:
    if not isinstance(value, str):
        return _INVALID
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return _INVALID
    return value


_COERCIONS: dict[str, Callable[[Any], Any]] = {
    "string": lambda value: value if isinstance(value, str) else _INVALID,
    "number": _to_number,
    "boolean": _to_boolean,
    "array": lambda value: value if isinstance(value, list) else _INVALID,
    "object": lambda value: value if isinstance(value, dict) else _INVALID,
    "date": _to_date,
}


def resolve_variables(
    declared: Any,
    overrides: Mapping[str, Any],
    context_for: Callable[[dict[str, Any]], ExpressionContext],
) -> dict[str, Any]:
    """The run's ``$vars``: defaults (which may use expressions), then overrides.

    A default may refer to other variables (``{{ $vars.base + 1 }}``); those
    are resolved first. ``context_for(resolved_so_far)`` builds the context
    a default is evaluated in. A cycle raises INVALID_VARIABLE.
    """
    declarations = variable_declarations(declared)
    resolved = {
        name: coerce_variable(
            name, declarations.get(name, {}).get("type", "any"), value
        )
        for name, value in overrides.items()
    }
    pending = [name for name in declarations if name not in resolved]
    while pending:
        ready = [
            name
            for name in pending
            if _depends_on(declarations[name]) & set(pending) <= set(resolved)
        ]
        if not ready:
            raise WorkflowFailed(
                "Workflow variables refer to each other in a cycle: "
                f"{sorted(pending)}.",
                code="INVALID_VARIABLE",
            )
        for name in ready:
            default = context_for(resolved).evaluate(declarations[name]["default"])
            resolved[name] = coerce_variable(name, declarations[name]["type"], default)
        pending = [name for name in pending if name not in resolved]
    return resolved


def _depends_on(declaration: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for text in find_templates(declaration["default"]):
        names |= template_references(text).variables
    return names
