"""What expressions may compute: size caps, guarded operators, functions.

Every operator and function an expression can reach is here, each refusing
to build a value past the caps (``EXPRESSION_TOO_LARGE``) before it builds
it. ``worker.expressions`` re-exports the public names.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import sys
from collections.abc import Callable
from typing import Any

from packagerepo.errors import ExpressionFailed

MAX_OUTPUT_CHARS = 8 * 1024 * 1024
MAX_INT_BITS = 4096
MAX_JOIN_ITEMS = 100_000
"""Elements ``join`` turns into text one at a time: a call the expression's
time limit cannot interrupt (a million took seconds), so a longer list is
refused."""


def as_text(value: Any) -> str:
    """How a value reads inside a string template (and ``str()``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return serialised(value)
    if isinstance(value, (int, float)):
        return str(value)
    # $node and functions are not JSON: their text would be a Python repr.
    raise TypeError("only JSON values can be made text")


def serialised(value: Any) -> str:
    """JSON text of ``value``, refused before building when it would be huge.

    Lists repeated by reference (``[[0] * 100] * 100``) are small in memory
    but enormous as text; the size walk stops at the budget first.
    """
    check_size(value)
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        raise too_large("a value nested too deeply for JSON")


def too_large(what: str) -> ExpressionFailed:
    return ExpressionFailed(
        f"The expression builds {what} larger than allowed.",
        code="EXPRESSION_TOO_LARGE",
    )


def check_size(value: Any, budget: int = MAX_OUTPUT_CHARS) -> int:
    """The size of ``value``'s JSON, refused (EXPRESSION_TOO_LARGE) past
    ``budget`` and refused when it is not JSON at all.

    Walks containers with an early exit, so a huge value costs at most
    ``budget`` steps; a long string costs one.
    """
    stack = [value]
    size = 0
    while stack:
        current = stack.pop()
        kind = type(current)
        if kind is str:
            # What it holds in memory: a string of 4-byte characters weighs
            # four times its length (getsizeof is O(1); ASCII pays 49).
            size += max(len(current), sys.getsizeof(current) - 80) + 2
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
                raise too_large("a number")
            # Its digits, as text or JSON (log10(2) < 0.302).
            size += current.bit_length() * 302 // 1000 + 2
        elif kind is float:
            if not math.isfinite(current):
                raise ExpressionFailed(
                    "The expression produced NaN or Infinity, which JSON cannot hold."
                )
            size += 24  # the longest a float prints
        elif current is None or kind is bool:
            size += 5
        else:
            raise ExpressionFailed(
                f"The expression produced a {kind.__name__}, which is not a JSON value."
            )
        if size > budget:
            raise too_large("a value")
    return size


def _sequence_size(value: str | list[Any]) -> int:
    """What a string or list weighs: its length, or a list's JSON size.

    A list repeated by reference (``[big] * n``) is small in memory, but
    every operation over it (``x in``, ``==``, ``json``) pays for each
    element: that is the size the caps are about.
    """
    return len(value) if isinstance(value, str) else check_size(value)


# -------------------------------------------------------------- operators


def _add(left: Any, right: Any) -> Any:
    sequences = isinstance(left, (str, list)) and isinstance(right, (str, list))
    if sequences and _sequence_size(left) + _sequence_size(right) > MAX_OUTPUT_CHARS:
        raise too_large("a string or list")
    return operator.add(left, right)


def _multiply(left: Any, right: Any) -> Any:
    for sequence, count in ((left, right), (right, left)):
        repeats = isinstance(sequence, (str, list)) and isinstance(count, int)
        if (
            repeats
            and count > 0
            and _sequence_size(sequence) * count > MAX_OUTPUT_CHARS
        ):
            raise too_large("a string or list")
    integers = isinstance(left, int) and isinstance(right, int)
    if integers and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise too_large("a number")
    return operator.mul(left, right)


def _power(base: Any, exponent: Any) -> Any:
    integers = isinstance(base, int) and isinstance(exponent, int)
    if integers and exponent * max(base.bit_length(), 1) > MAX_INT_BITS:
        raise too_large("a number")
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
    # Every part costs a Python string (~50 bytes) before any size check
    # could see the list: weigh the parts first.
    if isinstance(text, str) and isinstance(separator, str | None):
        if separator:
            parts = text.count(separator) + 1
        else:
            parts = len(text) if separator == "" else len(text) // 2 + 1
        if len(text) + 3 * parts > MAX_OUTPUT_CHARS:
            raise too_large("a list")
    return text.split(separator) if separator != "" else list(text)


def _join(values: list[Any], separator: str = "") -> str:
    if isinstance(values, list) and len(values) > MAX_JOIN_ITEMS:
        raise too_large("a list to join")
    check_size(values)
    if len(separator) * len(values) > MAX_OUTPUT_CHARS:
        raise too_large("a string")
    return separator.join(as_text(value) for value in values)


def _keys(mapping: dict[str, Any]) -> list[str]:
    # list() of a string or list would build one Python object per element,
    # past every size cap; only an object has keys.
    if not isinstance(mapping, dict):
        raise TypeError("keys() takes an object")
    return list(mapping)


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
    "keys": _keys,
    "default": _default,
    "json": serialised,
}
