"""Spotting regular expressions prone to catastrophic backtracking.

A heuristic over the tree Python's own regex parser builds: a repeat that
may run many times whose body holds another unbounded repeat (``(a+)+``,
``(.*x){20}``) or alternatives that can start with the same character
(``(a|ab)*``). It finds the classic exponential shapes, not every slow
pattern.

NOTE: ``re._parser`` is private (``sre_parse`` is its deprecated public
alias, which warns on import). A maintained ReDoS analyser on PyPI would
lift this; the ones there today are unmaintained or not yet stable.
"""

from __future__ import annotations

import re
import warnings
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

MAX_PATTERN_LENGTH = 2000
MAX_PATTERN_CHARS_PER_DOCUMENT = 4000
"""Pattern characters one document may have compiled in all: compiling is
not cheap (a case-insensitive class over all of Unicode costs about 5 ms),
so a document of thousands of patterns is refused, not compiled."""


class PatternBudget:
    """The pattern characters a document has left to compile."""

    PER_PATTERN = 8
    """What each pattern costs beyond its characters: compiling even an
    empty one is not free."""

    def __init__(self, chars: int = MAX_PATTERN_CHARS_PER_DOCUMENT) -> None:
        self.left = chars

    def take(self, pattern: str) -> bool:
        """Whether ``pattern`` fits in what is left (and takes it if so)."""
        cost = len(pattern) + self.PER_PATTERN
        if cost > self.left:
            self.left = 0
            return False
        self.left -= cost
        return True


_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT}
_WIDE = {sre.ANY, sre.IN, sre.CATEGORY, sre.NOT_LITERAL}


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` does not compile, or None when it does."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"The pattern is longer than {MAX_PATTERN_LENGTH} characters."
    try:
        with warnings.catch_warnings():
            # "Possible nested set" and similar hints are not our problem here.
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return f"The pattern does not compile: {exc}."
    return None


def is_catastrophic(pattern: str) -> bool:
    """Whether ``pattern`` (which compiles) nests repeats dangerously."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = _parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    return _has_dangerous_repeat(list(tree), inside_repeat=False)


def _has_dangerous_repeat(items: list[Any], *, inside_repeat: bool) -> bool:
    for op, argument in items:
        if op in _REPEATS:
            _low, high, body = argument
            body = list(body)
            unbounded = high == sre.MAXREPEAT
            if inside_repeat and unbounded:
                return True
            many = unbounded or high > 1
            if many and _has_overlapping_branch(body):
                return True
            if _has_dangerous_repeat(body, inside_repeat=inside_repeat or many):
                return True
        elif op == sre.SUBPATTERN:
            if _has_dangerous_repeat(list(argument[-1]), inside_repeat=inside_repeat):
                return True
        elif op == sre.BRANCH:
            for branch in argument[1]:
                if _has_dangerous_repeat(list(branch), inside_repeat=inside_repeat):
                    return True
    return False


def _has_overlapping_branch(items: list[Any]) -> bool:
    """Whether a branch in ``items`` has two alternatives that start alike."""
    for op, argument in items:
        if op == sre.SUBPATTERN:
            return _has_overlapping_branch(list(argument[-1]))
        if op != sre.BRANCH:
            continue
        starts = [_first_token(list(branch)) for branch in argument[1]]
        for i, first in enumerate(starts):
            for second in starts[i + 1 :]:
                if _may_overlap(first, second):
                    return True
    return False


def _first_token(items: list[Any]) -> tuple[Any, Any] | None:
    while items:
        op, argument = items[0]
        if op == sre.SUBPATTERN:
            items = list(argument[-1])
        elif op in _REPEATS:
            items = list(argument[2])
        else:
            return op, argument
    return None


def _may_overlap(first: tuple[Any, Any] | None, second: tuple[Any, Any] | None) -> bool:
    if first is None or second is None:
        return True
    if first[0] == sre.LITERAL and second[0] == sre.LITERAL:
        return bool(first[1] == second[1])
    return first[0] in _WIDE and second[0] in _WIDE
