"""Parsing and vetting expressions, and finding the templates that hold them.

``compile_expression`` turns the text between ``{{`` and ``}}`` into an
``ast`` tree after rewriting the n8n spellings and refusing every construct
outside the language (EXPRESSION_SYNTAX, EXPRESSION_FORBIDDEN,
EXPRESSION_TOO_LARGE); ``compile_template`` splits a parameter string into
text and expressions; ``template_references`` says which nodes and variables
a template names. ``worker.expressions`` re-exports the public names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# The loader vets expressions before a workflow is stored; both read the
# same limit and the same spelling of ``$`` from there.
from loader.expressions import MAX_EXPRESSION_CHARS as MAX_EXPRESSION_CHARS
from loader.expressions import PREFIX as PREFIX
from packagerepo.errors import ExpressionFailed
from worker.expression_values import FUNCTIONS, OPERATORS

_ALLOWED_NODES = (
    ast.Expression,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.List,
    ast.Tuple,
    ast.Dict,
    ast.And,
    ast.Or,
    *OPERATORS,
)
_ALLOWED_CONSTANTS = (str, int, float, bool, type(None))


def _translate(source: str) -> str:
    """Rewrite the n8n spellings (``$name``, ``&&``, ``===``…) outside strings."""
    out: list[str] = []
    quote = ""
    index = 0
    while index < len(source):
        char = source[index]
        if quote:
            out.append(char)
            if char == "\\":
                out.append(source[index + 1 : index + 2])
                index += 1
            elif char == quote:
                quote = ""
            index += 1
            continue

        three, two = source[index : index + 3], source[index : index + 2]
        if char in "'\"":
            quote, replacement, width = char, char, 1
        elif char == "$":
            replacement, width = PREFIX, 1
        elif three in ("===", "!=="):
            replacement, width = three[:2], 3
        elif two in ("&&", "||"):
            replacement, width = (" and " if two == "&&" else " or "), 2
        elif char == "!" and two != "!=":
            replacement, width = " not ", 1
        else:
            replacement, width = char, 1
        out.append(replacement)
        index += width
    return "".join(out)


def forbidden(source: str, what: str) -> ExpressionFailed:
    return ExpressionFailed(
        f"Expression {shorten(source)} uses {what}, which is not allowed.",
        code="EXPRESSION_FORBIDDEN",
    )


def shorten(source: str) -> str:
    text = source.strip()
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _check_allowed(tree: ast.AST, source: str) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise forbidden(source, type(node).__name__)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise forbidden(source, f"the attribute {node.attr!r}")
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise forbidden(source, f"the name {node.id!r}")
        if isinstance(node, ast.Constant) and not isinstance(
            node.value, _ALLOWED_CONSTANTS
        ):
            raise forbidden(source, f"a {type(node.value).__name__} literal")
        if isinstance(node, ast.Dict) and None in node.keys:
            raise forbidden(source, "dict unpacking")
        if isinstance(node, ast.Call):
            _check_call(node, source)
        if _formats_literal_text(node):
            raise forbidden(source, "% formatting of text")


def _formats_literal_text(node: ast.AST) -> bool:
    # "%" on any text is refused when it runs (worker.expression_values);
    # with literal text on the left it is refused here, as the loader does.
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Mod)
        and isinstance(node.left, ast.Constant)
        and isinstance(node.left.value, str)
    )


def _check_call(node: ast.Call, source: str) -> None:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        raise forbidden(source, "a call to something other than a named function")
    if node.keywords:
        raise forbidden(source, "keyword arguments")


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> ast.expr:
    """Parse and vet the text between ``{{`` and ``}}``.

    Raises ``ExpressionFailed`` with EXPRESSION_TOO_LARGE, EXPRESSION_SYNTAX
    or EXPRESSION_FORBIDDEN.
    """
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionFailed(
            f"An expression is {len(source)} characters long; the limit is "
            f"{MAX_EXPRESSION_CHARS}.",
            code="EXPRESSION_TOO_LARGE",
        )

    text = _translate(source).strip()
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        reason = getattr(error, "msg", None) or type(error).__name__
        raise ExpressionFailed(
            f"Expression {shorten(source)} is not valid: {reason}.",
            code="EXPRESSION_SYNTAX",
        )

    _check_allowed(tree, source)
    return tree.body


@dataclass(frozen=True)
class Template:
    """A parameter string split into literal text and compiled expressions."""

    parts: tuple[str | tuple[str, ast.expr], ...]
    single: bool
    """True when the string is one expression and nothing else but blanks."""


@lru_cache(maxsize=4096)
def compile_template(text: str) -> Template | None:
    """The template in ``text``, or None when it holds no ``{{``.

    Raises ``ExpressionFailed`` for an unclosed ``{{`` or a bad expression.
    """
    if "{{" not in text:
        return None

    body = text[1:] if text.startswith("=") else text
    parts: list[str | tuple[str, ast.expr]] = []
    position = 0
    while (start := body.find("{{", position)) != -1:
        if start > position:
            parts.append(body[position:start])
        source, position = _expression_at(body, start + 2)
        parts.append((source, compile_expression(source)))
    if position < len(body):
        parts.append(body[position:])

    expressions = [part for part in parts if isinstance(part, tuple)]
    blanks = all(isinstance(part, tuple) or not part.strip() for part in parts)
    return Template(tuple(parts), single=len(expressions) == 1 and blanks)


def _expression_at(body: str, start: int) -> tuple[str, int]:
    """The source of the expression opened at ``start`` and where it ends.

    The first ``}}`` usually closes it, but a dict literal inside can hold
    ``}}`` too, so later candidates are tried until one parses.
    """
    end = body.find("}}", start)
    if end == -1:
        raise ExpressionFailed(
            f"An expression opened with '{{{{' is never closed in {shorten(body)}.",
            code="EXPRESSION_SYNTAX",
        )

    first_error: ExpressionFailed | None = None
    while end != -1:
        source = body[start:end]
        try:
            compile_expression(source)
            return source, end + 2
        except ExpressionFailed as error:
            if error.code != "EXPRESSION_SYNTAX":
                raise
            first_error = first_error or error
        end = body.find("}}", end + 1)
    assert first_error is not None
    raise first_error


def find_templates(value: Any) -> Iterator[str]:
    """Every string inside ``value`` (at any depth) that holds ``{{``."""
    if isinstance(value, str):
        if "{{" in value:
            yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from find_templates(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from find_templates(inner)


@dataclass(frozen=True)
class References:
    """Node names and variable names an expression mentions literally."""

    nodes: frozenset[str]
    variables: frozenset[str]


def template_references(text: str) -> References:
    """What ``$node[...]`` and ``$vars.…`` in the template ``text`` refer to.

    For the loader's checks of unknown nodes and variables, and for ordering
    variable defaults that refer to each other.
    """
    template = compile_template(text)
    nodes: set[str] = set()
    variables: set[str] = set()
    for part in template.parts if template else ():
        if isinstance(part, tuple):
            _collect_references(part[1], nodes, variables)
    return References(frozenset(nodes), frozenset(variables))


def _collect_references(tree: ast.AST, nodes: set[str], variables: set[str]) -> None:
    for node in ast.walk(tree):
        owner = getattr(node, "value", None)
        if not isinstance(owner, ast.Name):
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            name = node.slice.value
        elif isinstance(node, ast.Attribute):
            name = node.attr
        else:
            continue
        if owner.id == PREFIX + "node" and isinstance(name, str):
            nodes.add(name)
        elif owner.id == PREFIX + "vars" and isinstance(name, str):
            variables.add(name)
