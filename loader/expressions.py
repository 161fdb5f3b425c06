"""Static checks of ``{{ ... }}`` expressions: syntax and references.

Expressions are never evaluated here. Their ``$`` names are rewritten to
plain identifiers so Python's own parser (``ast.parse`` in ``eval`` mode) can
check the syntax of the safe subset the engine evaluates; constructs that
subset lacks (lambdas, comprehensions, private attributes) are refused.
References to other nodes (``$node["Name"]``, n8n's ``$('Name')``) and to
variables (``$vars.x``, ``$vars["x"]``) are found by pattern, so they can be
checked even in n8n expressions, which are JavaScript.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from loader.problems import PathPart

ROOTS = frozenset({"json", "node", "vars", "input", "execution", "now"})

_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_DOLLAR_NAME = re.compile(r"\$(\w*)")
_DOLLAR_PREFIX = "_dollar_"
_NODE_REFERENCE = re.compile(
    r"""\$(?:node\s*\[|\s*\()\s*(?P<q>["'])(?P<name>.*?)(?P=q)\s*[\])]"""
)
_VARIABLE_REFERENCE = re.compile(
    r"""\$vars\s*(?:\.\s*(?P<attr>[A-Za-z_]\w*)|\[\s*(?P<q>["'])(?P<key>.*?)(?P=q)\s*\])"""
)
_GLUED_DOLLAR = re.compile(r"[\w$]\$")
_REFUSED_WORDS = re.compile(r"\b(?:lambda|for|await|yield)\b|:=")
_REFUSED_NODES = (
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.NamedExpr,
    ast.Await,
    ast.Yield,
    ast.YieldFrom,
    ast.Starred,
)


def expressions_in(text: str) -> tuple[list[str], bool]:
    """The bodies of the ``{{ ... }}`` in ``text``, and whether one is unterminated."""
    bodies = _EXPRESSION.findall(text)
    rest = _EXPRESSION.sub("", text) if bodies else text
    return bodies, "{{" in rest


@lru_cache(maxsize=4096)
def syntax_problem(body: str) -> str | None:
    """Why ``body`` is not a valid expression, or None when it is.

    Memoised: the same expressions recur across documents and tenants.
    """
    if not body.strip():
        return "The expression is empty."

    source = _DOLLAR_NAME.sub(lambda match: _DOLLAR_PREFIX + match.group(1), body)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        return f"The expression does not parse: {reason}."
    except (RecursionError, MemoryError):
        return "The expression nests too deep to parse."

    if _plainly_safe(body):
        return None
    return _refused_construct(tree)


def _plainly_safe(body: str) -> bool:
    """Whether a parsed body cannot hold a refused construct, read from its text.

    Spares the tree walk for the common expression. Without ``_``, ``*`` and
    the keywords below there can be no private name, starred or refused
    node; the ``$`` roots are then checked by pattern.
    """
    if "_" in body or "*" in body or _REFUSED_WORDS.search(body):
        return False
    if _GLUED_DOLLAR.search(body):
        return False
    return all(root in ROOTS for root in _DOLLAR_NAME.findall(body))


def _refused_construct(tree: ast.AST) -> str | None:
    for node in ast.walk(tree):
        if isinstance(node, _REFUSED_NODES):
            return f"Expressions may not use {type(node).__name__}."
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return f"Expressions may not read the private attribute {node.attr!r}."
        if isinstance(node, ast.Name) and node.id.startswith(_DOLLAR_PREFIX):
            root = node.id.removeprefix(_DOLLAR_PREFIX)
            if root not in ROOTS:
                allowed = ", ".join(f"${name}" for name in sorted(ROOTS))
                return f"${root} is not known; expressions may use {allowed}."
        elif isinstance(node, ast.Name) and node.id.startswith("_"):
            return f"Expressions may not use the private name {node.id!r}."
    return None


def node_references(body: str) -> list[str]:
    """Names of the nodes an expression reads."""
    return [match.group("name") for match in _NODE_REFERENCE.finditer(body)]


def variable_references(body: str) -> list[str]:
    """Names of the variables an expression reads."""
    return [
        match.group("attr") or match.group("key")
        for match in _VARIABLE_REFERENCE.finditer(body)
    ]


def strings_in(
    value: Any, path: list[PathPart]
) -> Iterator[tuple[list[PathPart], str]]:
    """Every string in ``value`` (keys excluded) with its path; iterative."""
    stack: list[tuple[Any, list[PathPart]]] = [(value, path)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, str):
            yield where, current
        elif isinstance(current, dict):
            stack.extend((child, [*where, key]) for key, child in current.items())
        elif isinstance(current, list):
            stack.extend((child, [*where, i]) for i, child in enumerate(current))
