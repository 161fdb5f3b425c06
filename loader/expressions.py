"""Static checks of ``{{ ... }}`` expressions: syntax and references.

Expressions are never evaluated here. They are vetted as the engine vets
them before it runs them (``worker/expression_syntax.py``, which the loader
may not import): the same n8n spellings rewritten, the same length cap, the
same allow-list of syntax and functions. The loader is stricter in one way
only: it also refuses ``$`` names and ``_`` names that could never resolve
at run time. A test holds the two together. References to other nodes
(``$node["Name"]``, n8n's ``$('Name')``) and to variables (``$vars.x``,
``$vars["x"]``) are found by pattern, so they can be checked even in n8n
expressions, which are JavaScript.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, NamedTuple

from loader.problems import PathPart

MAX_EXPRESSION_CHARS = 2000
"""Longest expression source the engine compiles (EXPRESSION_TOO_LARGE)."""

ROOTS = frozenset({"json", "node", "vars", "input", "execution", "now"})
FUNCTION_NAMES = frozenset(
    {
        *("len", "str", "int", "float", "number", "bool", "abs", "round"),
        *("min", "max", "lower", "upper", "trim", "startswith", "endswith"),
        *("contains", "split", "join", "keys", "default", "json"),
    }
)
"""The functions the engine lets an expression call."""

ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    *(ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Attribute),
    *(ast.Subscript, ast.Slice, ast.BinOp, ast.UnaryOp, ast.BoolOp),
    *(ast.Compare, ast.IfExp, ast.Call, ast.List, ast.Tuple, ast.Dict),
    *(ast.And, ast.Or, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv),
    *(ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not, ast.Eq, ast.NotEq),
    *(ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot),
)
"""The syntax the engine evaluates; anything else is EXPRESSION_FORBIDDEN."""

_ALLOWED_KINDS = frozenset(ALLOWED_NODES)
_CHECKED_KINDS = frozenset(
    {ast.Attribute, ast.Name, ast.Constant, ast.Dict, ast.Call, ast.BinOp}
)
_ALLOWED_CONSTANTS = (str, int, float, bool, type(None))
_OPERATOR_SYMBOLS = {
    ast.Invert: "~",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
}
PREFIX = "_S_"
"""What ``$`` becomes before parsing, here and in the engine: ``$json`` is the
identifier ``_S_json``."""
_TRANSLATED = frozenset("$&|!=")
_MAX_CANDIDATES = 4
"""Ends (``}}``) tried for one expression before it is refused as unparsable."""
# A string runs to its closing quote or, unclosed, to the end (as the engine's
# scan); a backslash takes the next character with it.
_STRING = re.compile(
    r"""'(?:[^'\\]|\\[\s\S]|\\\Z)*(?:'|\Z)|"(?:[^"\\]|\\[\s\S]|\\\Z)*(?:"|\Z)"""
)
_SPELLING = re.compile(r"\$|===|!==|&&|\|\||!(?!=)")
_PYTHON_SPELLINGS = {
    "$": PREFIX,
    "===": "==",
    "!==": "!=",
    "&&": " and ",
    "||": " or ",
    "!": " not ",
}

# A quoted name runs to the next quote of its kind, never past it: a lazy
# scan to a back-referenced quote ran to the end of the text from every
# opening, quadratic on "$('" repeated.
_QUOTED = r"""(?:"(?P<{0}2>[^"]*)"|'(?P<{0}1>[^']*)')"""
_NODE_REFERENCE = re.compile(
    r"\$(?:node\s*\[|\s*\()\s*" + _QUOTED.format("name") + r"\s*[\])]"
)
_VARIABLE_REFERENCE = re.compile(
    r"\$vars\s*(?:\.\s*(?P<attr>[A-Za-z_]\w*)|\[\s*" + _QUOTED.format("key") + r"\s*\])"
)


class ExpressionProblem(NamedTuple):
    """Why the engine would refuse an expression, as a rule code and a sentence."""

    code: str
    message: str
    unparsed: bool = False
    """The text does not parse, so a later ``}}`` may close it instead."""


def expressions_in(text: str) -> tuple[list[str], bool]:
    """The bodies of the ``{{ ... }}`` in ``text``, and whether one is unterminated.

    Split as the engine splits them: an expression ends at the first ``}}``
    after which it parses (a dict literal inside may hold ``}}`` too).
    """
    bodies: list[str] = []
    position = 0
    while (start := text.find("{{", position)) != -1:
        end = text.find("}}", start + 2)
        if end == -1:
            return bodies, True
        body, position = _body_at(text, start + 2, end)
        bodies.append(body)
    return bodies, False


def _body_at(text: str, start: int, end: int) -> tuple[str, int]:
    """The body opened at ``start`` whose first candidate end is ``end``.

    The engine stops at the first candidate it can judge (one that parses or
    is too long); when none parses, the first candidate is what it reports.
    Only the first few candidates are tried: each costs a parse, and a
    hostile string can hold a thousand. An expression that needs more is
    refused, which no real dict literal comes near.
    """
    candidate = end
    for _ in range(_MAX_CANDIDATES):
        if candidate == -1:
            break
        problem = syntax_problem(text[start:candidate])
        if problem is None or not problem.unparsed:
            return text[start:candidate], candidate + 2
        candidate = text.find("}}", candidate + 1)
    return text[start:end], end + 2


def syntax_problem(body: str) -> ExpressionProblem | None:
    """Why the engine would refuse ``body``, or None when it would run it.

    Memoised for bodies the engine could run: the same expressions recur
    across documents and tenants. A body too large is refused uncached, so
    the cache never holds one.
    """
    if len(body) > MAX_EXPRESSION_CHARS:
        return ExpressionProblem(
            "EXPRESSION_TOO_LARGE",
            f"The expression is {len(body)} characters long; the engine's "
            f"limit is {MAX_EXPRESSION_CHARS}.",
        )
    return _syntax_problem(body)


@lru_cache(maxsize=4096)
def _syntax_problem(body: str) -> ExpressionProblem | None:
    if not body.strip():
        return ExpressionProblem("INVALID_EXPRESSION", "The expression is empty.", True)

    try:
        tree = ast.parse(_translate(body).strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        message = f"The expression does not parse: {reason}."
        return ExpressionProblem("INVALID_EXPRESSION", message, True)
    except (RecursionError, MemoryError):
        message = "The expression nests too deep to parse."
        return ExpressionProblem("INVALID_EXPRESSION", message, True)

    refused = _refused_construct(tree)
    return ExpressionProblem("INVALID_EXPRESSION", refused) if refused else None


def _translate(source: str) -> str:
    """The engine's rewrite of ``$name``, ``&&``, ``||``, ``!``, ``===``, ``!==``.

    Outside string literals only, scanning left to right as the engine does;
    by regular expression, so trying many candidate ends of a long hostile
    expression stays cheap.
    """
    if _TRANSLATED.isdisjoint(source):
        return source

    out: list[str] = []
    position = 0
    for literal in _STRING.finditer(source):
        out.append(_SPELLING.sub(_python_spelling, source[position : literal.start()]))
        out.append(literal[0])
        position = literal.end()
    out.append(_SPELLING.sub(_python_spelling, source[position:]))
    return "".join(out)


def _python_spelling(match: re.Match[str]) -> str:
    return _PYTHON_SPELLINGS[match[0]]


def _refused_construct(tree: ast.AST) -> str | None:
    """Why the engine would refuse ``tree``, or why it could never resolve.

    A hand-rolled walk that looks closer only at the six node kinds with
    rules of their own: ``ast.walk`` plus a check per node tripled the cost
    of a long expression.
    """
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind not in _ALLOWED_KINDS:
            return _disallowed(kind)
        reason = _refused_node(node) if kind in _CHECKED_KINDS else None
        if reason:
            return reason
        for name in node._fields:
            value = getattr(node, name, None)
            if type(value) is list:
                stack.extend(child for child in value if child is not None)
            elif isinstance(value, ast.AST):
                stack.append(value)
    return None


def _disallowed(kind: type[ast.AST]) -> str:
    symbol = _OPERATOR_SYMBOLS.get(kind)
    if symbol:
        return f"Expressions may not use the operator {symbol!r}."
    return f"Expressions may not use {kind.__name__}."


def _refused_node(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
        return f"Expressions may not read the private attribute {node.attr!r}."
    if isinstance(node, ast.Name):
        return _name_problem(node.id)
    if isinstance(node, ast.Constant) and not isinstance(
        node.value, _ALLOWED_CONSTANTS
    ):
        return f"Expressions may not use a {type(node.value).__name__} literal."
    if isinstance(node, ast.Dict) and None in node.keys:
        return "Expressions may not unpack an object with **."
    if isinstance(node, ast.Call):
        return _call_problem(node)
    if isinstance(node, ast.BinOp) and _formats_literal_text(node):
        return "Formatting text with % is not allowed in expressions."
    return None


def _formats_literal_text(node: ast.BinOp) -> bool:
    # The engine refuses % on any text; only literal text is known here.
    left = node.left
    return (
        isinstance(node.op, ast.Mod)
        and isinstance(left, ast.Constant)
        and isinstance(left.value, str)
    )


def _name_problem(name: str) -> str | None:
    if name.startswith(PREFIX):
        root = name.removeprefix(PREFIX)
        if root not in ROOTS:
            allowed = ", ".join(f"${known}" for known in sorted(ROOTS))
            shown = root.replace(PREFIX, "$")
            return f"${shown} is not known; expressions may use {allowed}."
    elif PREFIX in name:
        return "A $ name must stand on its own, not be glued to another name."
    elif name.startswith("_"):
        # The engine refuses __names; other _names could never resolve.
        return f"Expressions may not use the private name {name!r}."
    return None


def _call_problem(node: ast.Call) -> str | None:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTION_NAMES:
        allowed = ", ".join(sorted(FUNCTION_NAMES))
        return f"Expressions may call only these functions: {allowed}."
    if node.keywords:
        return "Expressions may not pass keyword arguments."
    return None


def node_references(body: str) -> list[str]:
    """Names of the nodes an expression reads."""
    return [
        match.group("name1") or match.group("name2") or ""
        for match in _NODE_REFERENCE.finditer(body)
    ]


def variable_references(body: str) -> list[str]:
    """Names of the variables an expression reads."""
    return [
        match.group("attr") or match.group("key1") or match.group("key2") or ""
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
