"""Turning bytes into a workflow document, refusing hostile input quickly.

``parse_document`` checks size, encoding and nesting depth *before* handing
the text to ``json.loads`` (whose C scanner recurses), refuses duplicate keys
and non-standard numbers, and normalises the older dict encoding of
connection outputs. Every refusal is an ``InvalidWorkflow`` whose details
carry the specific rule code.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from loader.problems import Problem, error, warning
from packagerepo.errors import InvalidWorkflow, PackageRepoError

MAX_BYTES = 1_048_576
MAX_DEPTH = 64

# A string runs to its closing quote or, unclosed, to the end of the text
# (a lone backslash may end it). Every quote that opens a string therefore
# matches at once: a pattern that could fail there would be retried at each
# escaped quote inside, quadratic on "\"\"\"... with no closing quote.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_BRACKET_DELTA = {"{": 1, "[": 1, "}": -1, "]": -1}
_BRACKETS_ONLY = re.compile(r"[\[\]{}]+")


class ParsedDocument(dict[str, Any]):
    """A document that came through ``parse_document``.

    It is a plain dict to every caller. ``notes`` holds the warnings that
    normalisation produced (the original encoding is gone by the time
    ``validate`` sees it), and ``depth_checked`` spares ``validate`` a second
    depth walk.
    """

    notes: tuple[Problem, ...] = ()
    depth_checked: bool = False


def parse_document(
    raw: bytes | str,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
) -> dict[str, Any]:
    """Parse and normalise a workflow document, or raise ``InvalidWorkflow``."""
    parsed = load_json(raw, max_bytes=max_bytes, max_depth=max_depth)
    if not isinstance(parsed, dict):
        _refuse("NOT_AN_OBJECT", "The top level of a workflow must be an object.")

    document = ParsedDocument(parsed)
    document.notes = tuple(normalise_connections(document))
    document.depth_checked = True
    return document


def load_json(
    raw: bytes | str,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    failure: type[PackageRepoError] = InvalidWorkflow,
) -> Any:
    """Strict JSON: size, UTF-8 and depth checked first; no duplicate keys,
    no NaN, Infinity or numbers too large for a float.

    Refusals raise ``failure`` (``InvalidWorkflow`` by default; the API uses
    ``InvalidRequest`` for request bodies) with the rule code in details.
    """
    try:
        text = _decode(raw, max_bytes)
        _check_depth_of_text(text, max_depth)
        return _loads(text)
    except _Refusal as refusal:
        problem = error(refusal.code, [], refusal.message)
        raise failure(refusal.message, details=[problem.to_dict()])


class _Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse(code: str, message: str) -> None:
    problem = error(code, [], message)
    raise InvalidWorkflow(message, details=[problem.to_dict()])


def _refuse_input(code: str, message: str) -> None:
    raise _Refusal(code, message)


def _decode(raw: bytes | str, max_bytes: int) -> str:
    size = (
        len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    )
    if size > max_bytes:
        _refuse_input(
            "DOCUMENT_TOO_LARGE",
            f"The document is {size} bytes; the limit is {max_bytes}.",
        )
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _refuse_input(
            "INVALID_ENCODING",
            f"The document is not UTF-8 (bad byte at offset {exc.start}).",
        )
    raise AssertionError("unreachable")


def _check_depth_of_text(text: str, max_depth: int) -> None:
    """Refuse text whose brackets nest deeper than ``max_depth``, without recursion.

    Strings are blanked out first so brackets inside them do not count.
    """
    brackets = "".join(_BRACKETS_ONLY.findall(_JSON_STRING.sub("", text)))
    if not brackets:
        return
    depth = max(accumulate(_BRACKET_DELTA[char] for char in brackets))
    if depth > max_depth:
        _refuse_input(
            "DOCUMENT_TOO_DEEP",
            f"The document nests {depth} levels deep; the limit is {max_depth}.",
        )


def _loads(text: str) -> Any:
    try:
        return json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except _DuplicateKey as exc:
        _refuse_input(
            "DUPLICATE_KEY", f"The key {exc.key!r} appears twice in one object."
        )
    except _NonStandardNumber as exc:
        _refuse_input("INVALID_JSON", f"{exc.literal} is not a JSON number.")
    except RecursionError:
        _refuse_input("DOCUMENT_TOO_DEEP", "The document nests too deep to parse.")
    except ValueError as exc:
        _refuse_input("INVALID_JSON", f"The document is not JSON: {exc}.")
    raise AssertionError("unreachable")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _NonStandardNumber(ValueError):
    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _refuse_constant(literal: str) -> Any:
    raise _NonStandardNumber(literal)


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _NonStandardNumber(literal)
    return number


def depth_of(value: Any, limit: int) -> int:
    """How deep ``value`` nests (a scalar is 0), counting at most to ``limit + 1``.

    Iterative, so a hostile document cannot exhaust the call stack.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, level = stack.pop()
        children: Iterable[Any]
        if isinstance(current, dict):
            children = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def normalise_connections(document: dict[str, Any]) -> list[Problem]:
    """Turn dict-encoded outputs (``{"0": [...]}``) into lists, in place.

    Returns one ``LEGACY_CONNECTIONS`` warning per converted output type.
    Keys that are not non-negative integers are left alone for the schema
    to report.
    """
    connections = document.get("connections")
    if not isinstance(connections, dict):
        return []

    notes: list[Problem] = []
    for source, outputs in connections.items():
        if not isinstance(outputs, dict):
            continue
        for output_type, lists in outputs.items():
            converted = _as_output_list(lists)
            if converted is None:
                continue
            outputs[output_type] = converted
            notes.append(
                warning(
                    "LEGACY_CONNECTIONS",
                    ["connections", source, output_type],
                    f"Outputs of {source!r} were keyed by index strings; "
                    "they were converted to a list.",
                )
            )
    return notes


def _as_output_list(lists: Any) -> list[Any] | None:
    if not isinstance(lists, dict) or not lists:
        return None
    if not all(key.isascii() and key.isdigit() and len(key) <= 4 for key in lists):
        return None

    converted: list[Any] = [[] for _ in range(max(int(key) for key in lists) + 1)]
    for key, targets in lists.items():
        converted[int(key)] = targets
    return converted
