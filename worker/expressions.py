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

The parts: ``worker.expression_syntax`` parses and vets,
``worker.expression_values`` holds the guarded operators, functions and size
caps, and this module evaluates; it re-exports the others' public names.
"""

from __future__ import annotations

import ast
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

import simpleeval

from packagerepo.errors import ExpressionFailed
from worker.expression_syntax import (
    MAX_EXPRESSION_CHARS,
    PREFIX,
    References,
    Template,
    compile_expression,
    compile_template,
    find_templates,
    forbidden,
    shorten,
    template_references,
)
from worker.expression_values import (
    FUNCTIONS,
    MAX_INT_BITS,
    MAX_OUTPUT_CHARS,
    OPERATORS,
    as_text,
    check_size,
    too_large,
)

__all__ = [
    "EXPRESSION_TIME_LIMIT",
    "FUNCTIONS",
    "MAX_EXPRESSION_CHARS",
    "MAX_INT_BITS",
    "MAX_OUTPUT_CHARS",
    "OPERATORS",
    "ExpressionContext",
    "NodeOutputs",
    "References",
    "Template",
    "as_text",
    "compile_expression",
    "compile_template",
    "find_templates",
    "template_references",
]

EXPRESSION_TIME_LIMIT = 0.5
DEADLINE_PASSED = "DEADLINE_PASSED"
"""The code of an expression stopped by its node's or run's deadline; the
engine reports the node's own timeout code in its place."""

_TRUTHY_NAMES = {"true": True, "false": False, "null": None}
_TRUTHY_NAMES |= {"True": True, "False": False, "None": None}


_per_thread = threading.local()
"""Each thread's evaluator, kept across runs."""


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
            f"{shorten(self.expr)}."
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
        values = []
        budget = _Budget()
        for element in node.elts:
            values.append(budget.spend(self._eval(element)))
        return values

    def _eval_mapping(self, node: ast.Dict) -> dict[Any, Any]:
        mapping = {}
        budget = _Budget()
        for key, value in zip(node.keys, node.values, strict=True):
            if key is not None:
                mapping[self._eval(key)] = budget.spend(self._eval(value))
        return mapping


class _Budget:
    """The size cap over a literal's elements together: each is capped
    alone, but ``[big, big, big]`` would hold three of them."""

    def __init__(self) -> None:
        self.left = MAX_OUTPUT_CHARS

    def spend(self, value: Any) -> Any:
        self.left -= check_size(value, max(self.left, 0))
        return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "string", list: "list", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, (int, float)) else "value"
    )


class Built:
    """What a run's expressions have built so far, shared by every context
    of the run (its variable defaults' and its nodes'), so together they
    stay inside ``output_budget``."""

    def __init__(self) -> None:
        self.total = 0


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
        output_budget: int | None = None,
        deadline: float = math.inf,
        built: Built | None = None,
    ) -> None:
        self.time_limit = time_limit
        self.deadline = deadline
        # What all evaluations of the run may build together: each value is
        # capped, but a node with thousands of parameters is not.
        self.output_budget = output_budget
        self._built = built if built is not None else Built()
        self._per_thread = threading.local()
        self._names = {
            **_TRUTHY_NAMES,
            PREFIX + "node": NodeOutputs(items_by_node),
            PREFIX + "vars": dict(variables),
            PREFIX + "input": job_input,
            PREFIX + "execution": {"id": execution_id, "tenant": tenant},
            PREFIX + "now": now,
        }

    def _evaluator(self) -> _SandboxEvaluator:
        """This thread's evaluator, holding this thread's copy of the run's
        names (``$json`` is set in it per evaluation).

        Building an evaluator is not cheap (simpleeval sets up its tables
        and a warnings filter), so each thread keeps one across runs; it
        evaluates for one run at a time and never re-enters itself. A node
        thread the engine abandoned keeps its own.
        """
        evaluator: _SandboxEvaluator | None = getattr(_per_thread, "evaluator", None)
        if evaluator is None:
            evaluator = _SandboxEvaluator({}, deadline=0.0)
            _per_thread.evaluator = evaluator
        names = getattr(self._per_thread, "names", None)
        if names is None:
            names = self._per_thread.names = dict(self._names)
        evaluator.names = names
        return evaluator

    def evaluate(
        self,
        value: Any,
        item: dict[str, Any] | None = None,
        deadline: float = math.inf,
    ) -> Any:
        """``value`` with every template in it (at any depth) evaluated; no
        expression runs past ``deadline`` (a node's) or the run's."""
        if isinstance(value, str):
            template = compile_template(value)
            if template is None:
                return value
            return self.render(template, item, deadline)
        if isinstance(value, dict):
            return {
                key: self.evaluate(inner, item, deadline)
                for key, inner in value.items()
            }
        if isinstance(value, list):
            return [self.evaluate(inner, item, deadline) for inner in value]
        return value

    def render(
        self,
        template: Template,
        item: dict[str, Any] | None,
        deadline: float = math.inf,
    ) -> Any:
        """The value of a compiled template with ``$json`` bound to ``item``."""
        if template.single:
            source, tree = next(p for p in template.parts if isinstance(p, tuple))
            return self.run(source, tree, item, deadline)

        pieces = [
            part if isinstance(part, str) else as_text(self.run(*part, item, deadline))
            for part in template.parts
        ]
        text = "".join(pieces)
        if len(text) > MAX_OUTPUT_CHARS:
            raise too_large("a string")
        return text

    def run(
        self,
        source: str,
        tree: ast.expr,
        item: dict[str, Any] | None,
        deadline: float = math.inf,
    ) -> Any:
        """Evaluate one compiled expression; every failure is ExpressionFailed.

        It stops after the expression time limit, or sooner at ``deadline``
        or the run's: expressions that each keep inside the limit cannot
        together run past their node's time.
        """
        evaluator = self._evaluator()
        evaluator.names[PREFIX + "json"] = {} if item is None else item
        outer = min(deadline, self.deadline)
        evaluator.deadline = min(time.monotonic() + self.time_limit, outer)
        try:
            value = evaluator.eval(source, previously_parsed=tree)
        except ExpressionFailed:
            raise
        except _TimeUp:
            if time.monotonic() >= outer:
                raise ExpressionFailed(
                    f"Expression {shorten(source)} was stopped at its node's "
                    "or the run's time limit.",
                    code=DEADLINE_PASSED,
                )
            raise ExpressionFailed(
                f"Expression {shorten(source)} ran longer than {self.time_limit:g} s.",
                code="EXPRESSION_TIMEOUT",
            )
        except (simpleeval.IterableTooLong, simpleeval.NumberTooHigh):
            raise too_large("a value")
        except simpleeval.FeatureNotAvailable as error:
            raise forbidden(source, str(error))
        except simpleeval.NameNotDefined as error:
            raise ExpressionFailed(
                f"Expression {shorten(source)} uses the unknown name "
                f"{error.name.replace(PREFIX, '$')!r}."
            )
        except (
            ArithmeticError,
            AttributeError,  # a function given the wrong kind: lower(5)
            LookupError,
            TypeError,
            ValueError,
        ) as error:
            raise ExpressionFailed(f"Expression {shorten(source)} failed: {error}.")
        except (RecursionError, MemoryError):
            raise too_large("a value")

        self._spend(check_size(value), source)
        return value

    def _spend(self, size: int, source: str) -> None:
        # Several threads may evaluate at once; an unlocked sum can only
        # undercount by a few values, which the budget's size absorbs.
        self._built.total += size
        if self.output_budget is not None and self._built.total > self.output_budget:
            raise ExpressionFailed(
                f"Expression {shorten(source)} takes the values this run's "
                f"expressions built past {self.output_budget} characters.",
                code="EXPRESSION_TOO_LARGE",
            )
