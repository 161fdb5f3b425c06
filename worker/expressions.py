"""Expressions ``{{ … }}`` inside node parameters, evaluated in a sandbox.

The language is a small, n8n-flavoured subset of Python expressions, parsed
with :mod:`ast` and evaluated by ``simpleeval`` (never ``eval``/``exec``):

* names: ``$json`` (the current item), ``$node["Name"].json`` (first item a
  node emitted; ``.items`` for all of them), ``$vars.x``, ``$input`` (the job
  input), ``$execution.id``, ``$execution.tenant``, ``$now`` (ISO-8601 UTC);
* literals (strings, numbers, ``true``/``false``/``null`` as well as Python's
  spelling, lists, dicts), attribute access on objects (``a.b`` is
  ``a["b"]``; a missing key is ``null``), indexing and slicing, ``.length``
  on strings and lists;
* arithmetic (``+ - * / // % **``), comparisons, ``in``, ``and``/``or``/
  ``not`` (``&&``, ``||``, ``!``, ``===`` and ``!==`` are accepted too), and
  ``a if cond else b``;
* the functions in ``FUNCTIONS``.

Everything else — dunder and underscore attributes, lambdas, comprehensions,
f-strings, keyword arguments, calling anything not in ``FUNCTIONS`` — is
refused before evaluation with EXPRESSION_FORBIDDEN. An expression's source is
capped at ``MAX_EXPRESSION_CHARS``, intermediate strings, lists and numbers are
capped (EXPRESSION_TOO_LARGE), its value must be JSON and no larger than
``MAX_OUTPUT_CHARS``, and evaluation stops after ``EXPRESSION_TIME_LIMIT``
seconds (EXPRESSION_TIMEOUT).

A parameter that is exactly one ``{{ … }}`` (surrounding blanks allowed)
keeps the expression's type; any text around it makes the result a string.
An n8n-style leading ``=`` before a template is ignored.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import simpleeval

from packagerepo.errors import ExpressionFailed

MAX_EXPRESSION_CHARS = 2000
MAX_OUTPUT_CHARS = 8 * 1024 * 1024
MAX_INT_BITS = 4096
EXPRESSION_TIME_LIMIT = 0.5

_PREFIX = "_S_"
"""What ``$`` becomes before parsing: ``$json`` is the identifier ``_S_json``."""

_TRUTHY_NAMES = {"true": True, "false": False, "null": None}
_TRUTHY_NAMES |= {"True": True, "False": False, "None": None}


# ---------------------------------------------------------------- values


def as_text(value: Any) -> str:
    """How a value reads inside a string template (and ``str()``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _serialised(value)
    return str(value)


def _serialised(value: Any) -> str:
    """JSON text of ``value``, refused before building when it would be huge.

    Lists repeated by reference (``[[0] * 100] * 100``) are small in memory
    but enormous as text; the size walk stops at the budget first.
    """
    _check_size(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _too_large(what: str) -> ExpressionFailed:
    return ExpressionFailed(
        f"The expression builds {what} larger than allowed.",
        code="EXPRESSION_TOO_LARGE",
    )


def _check_size(value: Any, budget: int = MAX_OUTPUT_CHARS) -> None:
    """Refuse values that are not JSON or whose JSON would exceed ``budget``.

    Walks containers with an early exit, so a huge value costs at most
    ``budget`` steps; a long string costs one.
    """
    stack = [value]
    size = 0
    while stack:
        current = stack.pop()
        kind = type(current)
        if kind is str:
            size += len(current) + 2
        elif kind is dict:
            size += 2
            for key, inner in current.items():
                if type(key) is not str:
                    raise ExpressionFailed("An object key in the result is not text.")
                size += len(key) + 4
                stack.append(inner)
        elif kind is list:
            size += 2 + len(current)
            stack.extend(current)
        elif kind is int:
            if current.bit_length() > MAX_INT_BITS:
                raise _too_large("a number")
            size += 8
        elif kind is float:
            if not math.isfinite(current):
                raise ExpressionFailed(
                    "The expression produced NaN or Infinity, which JSON cannot hold."
                )
            size += 8
        elif current is None or kind is bool:
            size += 5
        else:
            raise ExpressionFailed(
                f"The expression produced a {kind.__name__}, which is not a JSON value."
            )
        if size > budget:
            raise _too_large("a value")


# -------------------------------------------------------------- operators


def _add(left: Any, right: Any) -> Any:
    sequences = isinstance(left, (str, list)) and isinstance(right, (str, list))
    if sequences and len(left) + len(right) > MAX_OUTPUT_CHARS:
        raise _too_large("a string or list")
    return operator.add(left, right)


def _multiply(left: Any, right: Any) -> Any:
    for sequence, count in ((left, right), (right, left)):
        repeats = isinstance(sequence, (str, list)) and isinstance(count, int)
        if repeats and len(sequence) * count > MAX_OUTPUT_CHARS:
            raise _too_large("a string or list")
    integers = isinstance(left, int) and isinstance(right, int)
    if integers and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise _too_large("a number")
    return operator.mul(left, right)


def _power(base: Any, exponent: Any) -> Any:
    integers = isinstance(base, int) and isinstance(exponent, int)
    if integers and exponent * max(base.bit_length(), 1) > MAX_INT_BITS:
        raise _too_large("a number")
    return operator.pow(base, exponent)


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        # "%" on text is printf formatting; a width like %999999999d would
        # build a huge string, so it is not part of the language.
        raise ExpressionFailed(
            "Formatting text with % is not allowed in expressions.",
            code="EXPRESSION_FORBIDDEN",
        )
    return operator.mod(left, right)


OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: _add,
    ast.Sub: operator.sub,
    ast.Mult: _multiply,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: _modulo,
    ast.Pow: _power,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda item, container: item in container,
    ast.NotIn: lambda item, container: item not in container,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


# -------------------------------------------------------------- functions


def _number(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() and "." not in str(value) else number


def _round(value: float, digits: int = 0) -> float:
    return round(value, max(-15, min(15, int(digits))))


def _split(text: str, separator: str | None = None) -> list[str]:
    return text.split(separator) if separator != "" else list(text)


def _join(values: list[Any], separator: str = "") -> str:
    _check_size(values)
    if len(separator) * len(values) > MAX_OUTPUT_CHARS:
        raise _too_large("a string")
    return separator.join(as_text(value) for value in values)


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None or value == "" else value


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "str": as_text,
    "int": lambda value: int(float(value)) if isinstance(value, str) else int(value),
    "float": float,
    "number": _number,
    "bool": bool,
    "abs": abs,
    "round": _round,
    "min": min,
    "max": max,
    "lower": lambda text: text.lower(),
    "upper": lambda text: text.upper(),
    "trim": lambda text: text.strip(),
    "startswith": lambda text, prefix: text.startswith(prefix),
    "endswith": lambda text, suffix: text.endswith(suffix),
    "contains": lambda container, item: item in container,
    "split": _split,
    "join": _join,
    "keys": lambda mapping: list(mapping),
    "default": _default,
    "json": _serialised,
}


# ------------------------------------------------------------- compiling

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
            replacement, width = _PREFIX, 1
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


def _forbidden(source: str, what: str) -> ExpressionFailed:
    return ExpressionFailed(
        f"Expression {_shorten(source)} uses {what}, which is not allowed.",
        code="EXPRESSION_FORBIDDEN",
    )


def _shorten(source: str) -> str:
    text = source.strip()
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _check_allowed(tree: ast.AST, source: str) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise _forbidden(source, type(node).__name__)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise _forbidden(source, f"the attribute {node.attr!r}")
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise _forbidden(source, f"the name {node.id!r}")
        if isinstance(node, ast.Constant) and not isinstance(
            node.value, _ALLOWED_CONSTANTS
        ):
            raise _forbidden(source, f"a {type(node.value).__name__} literal")
        if isinstance(node, ast.Dict) and None in node.keys:
            raise _forbidden(source, "dict unpacking")
        if isinstance(node, ast.Call):
            _check_call(node, source)


def _check_call(node: ast.Call, source: str) -> None:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        raise _forbidden(source, "a call to something other than a named function")
    if node.keywords:
        raise _forbidden(source, "keyword arguments")


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
            f"Expression {_shorten(source)} is not valid: {reason}.",
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
            f"An expression opened with '{{{{' is never closed in {_shorten(body)}.",
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
        if owner.id == _PREFIX + "node" and isinstance(name, str):
            nodes.add(name)
        elif owner.id == _PREFIX + "vars" and isinstance(name, str):
            variables.add(name)


# ------------------------------------------------------------ evaluating


class NodeOutputs:
    """What ``$node`` is: the items each node has emitted so far in the run."""

    def __init__(self, items_by_node: Mapping[str, list[dict[str, Any]]]) -> None:
        self._items_by_node = items_by_node

    def lookup(self, name: Any) -> dict[str, Any]:
        items = self._items_by_node.get(name) if isinstance(name, str) else None
        if items is None:
            raise ExpressionFailed(
                f"Node {name!r} has not produced output in this execution."
            )
        return {"json": items[0] if items else {}, "items": items}


class _TimeUp(Exception):
    """Raised inside the evaluator when its time budget is spent."""


class _SandboxEvaluator(simpleeval.SimpleEval):
    """simpleeval with JSON-only attribute access and a deadline.

    NOTE: ``_eval`` skips simpleeval's per-step scan of every intermediate
    value for modules and dangerous functions (which walks whole items and
    made each ``$json`` reference cost its size). It is not needed here: the
    names hold only JSON data, ``NodeOutputs`` and ``FUNCTIONS``; attributes
    resolve to dict keys only; and calls are limited to ``FUNCTIONS`` by
    ``_check_allowed`` before evaluation.
    """

    def __init__(self, names: dict[str, Any], deadline: float) -> None:
        super().__init__(operators=OPERATORS, functions=FUNCTIONS, names=names)
        self.deadline = deadline
        self.nodes[ast.List] = self._eval_sequence
        self.nodes[ast.Tuple] = self._eval_sequence
        self.nodes[ast.Dict] = self._eval_mapping

    def _eval(self, node: ast.AST) -> Any:
        if time.monotonic() > self.deadline:
            raise _TimeUp
        try:
            handler = self.nodes[type(node)]
        except KeyError:
            raise simpleeval.FeatureNotAvailable(type(node).__name__)
        return handler(node)

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        value = self._eval(node.value)
        if isinstance(value, dict):
            return value.get(node.attr)
        if isinstance(value, NodeOutputs):
            return value.lookup(node.attr)
        if node.attr == "length" and isinstance(value, (str, list)):
            return len(value)
        raise ExpressionFailed(
            f"Cannot read {node.attr!r} of a {_json_type(value)} in "
            f"{_shorten(self.expr)}."
        )

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(container, NodeOutputs):
            return container.lookup(key)
        if isinstance(container, dict):
            return container.get(key)
        return container[key]

    def _eval_sequence(self, node: ast.List | ast.Tuple) -> list[Any]:
        return [self._eval(element) for element in node.elts]

    def _eval_mapping(self, node: ast.Dict) -> dict[Any, Any]:
        return {
            self._eval(key): self._eval(value)
            for key, value in zip(node.keys, node.values, strict=True)
            if key is not None
        }


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "string", list: "list", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, (int, float)) else "value"
    )


class ExpressionContext:
    """Everything expressions in one run can see, and the way to evaluate them.

    ``items_by_node`` is read at evaluation time, so the engine can keep
    adding to it as nodes finish. ``evaluate`` is safe to call from several
    threads: each thread gets its own evaluator.
    """

    def __init__(
        self,
        *,
        execution_id: str,
        tenant: str,
        job_input: Any,
        variables: Mapping[str, Any],
        items_by_node: Mapping[str, list[dict[str, Any]]],
        now: str,
        time_limit: float = EXPRESSION_TIME_LIMIT,
    ) -> None:
        self.time_limit = time_limit
        self._per_thread = threading.local()
        self._names = {
            **_TRUTHY_NAMES,
            _PREFIX + "node": NodeOutputs(items_by_node),
            _PREFIX + "vars": dict(variables),
            _PREFIX + "input": job_input,
            _PREFIX + "execution": {"id": execution_id, "tenant": tenant},
            _PREFIX + "now": now,
        }

    def _evaluator(self) -> _SandboxEvaluator:
        """This thread's evaluator for this run, built once (it is not cheap).

        Evaluation never re-enters itself, so one evaluator per thread is
        enough; a node thread the engine abandoned keeps its own.
        """
        evaluator = getattr(self._per_thread, "evaluator", None)
        if evaluator is None:
            evaluator = _SandboxEvaluator(dict(self._names), deadline=0.0)
            self._per_thread.evaluator = evaluator
        return evaluator

    def evaluate(self, value: Any, item: dict[str, Any] | None = None) -> Any:
        """``value`` with every template in it (at any depth) evaluated."""
        if isinstance(value, str):
            template = compile_template(value)
            return value if template is None else self.render(template, item)
        if isinstance(value, dict):
            return {key: self.evaluate(inner, item) for key, inner in value.items()}
        if isinstance(value, list):
            return [self.evaluate(inner, item) for inner in value]
        return value

    def render(self, template: Template, item: dict[str, Any] | None) -> Any:
        """The value of a compiled template with ``$json`` bound to ``item``."""
        if template.single:
            source, tree = next(p for p in template.parts if isinstance(p, tuple))
            return self.run(source, tree, item)

        pieces = [
            part if isinstance(part, str) else as_text(self.run(*part, item))
            for part in template.parts
        ]
        text = "".join(pieces)
        if len(text) > MAX_OUTPUT_CHARS:
            raise _too_large("a string")
        return text

    def run(self, source: str, tree: ast.expr, item: dict[str, Any] | None) -> Any:
        """Evaluate one compiled expression; every failure is ExpressionFailed."""
        evaluator = self._evaluator()
        evaluator.names[_PREFIX + "json"] = {} if item is None else item
        evaluator.deadline = time.monotonic() + self.time_limit
        try:
            value = evaluator.eval(source, previously_parsed=tree)
        except ExpressionFailed:
            raise
        except _TimeUp:
            raise ExpressionFailed(
                f"Expression {_shorten(source)} ran longer than {self.time_limit:g} s.",
                code="EXPRESSION_TIMEOUT",
            )
        except (simpleeval.IterableTooLong, simpleeval.NumberTooHigh):
            raise _too_large("a value")
        except simpleeval.FeatureNotAvailable as error:
            raise _forbidden(source, str(error))
        except simpleeval.NameNotDefined as error:
            raise ExpressionFailed(
                f"Expression {_shorten(source)} uses the unknown name "
                f"{error.name.replace(_PREFIX, '$')!r}."
            )
        except (ArithmeticError, LookupError, TypeError, ValueError) as error:
            raise ExpressionFailed(f"Expression {_shorten(source)} failed: {error}.")
        except (RecursionError, MemoryError):
            raise _too_large("a value")

        _check_size(value)
        return value
