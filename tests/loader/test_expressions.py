"""The loader's expression checks refuse exactly what the engine refuses.

The loader may not import the engine (README, Layout), so it keeps its own
copy of the engine's vetting; these tests hold the two together.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loader import validate
from loader.expressions import (
    ALLOWED_NODES,
    FUNCTION_NAMES,
    MAX_EXPRESSION_CHARS,
    expressions_in,
    syntax_problem,
)
from packagerepo.errors import ExpressionFailed
from tests.loader.conftest import fixture_paths
from worker import expression_syntax
from worker.expression_values import FUNCTIONS

SAMPLES = [
    "$json.size > 10",
    '$node["Parse Path"].json.name',
    "$vars.limit * 2",
    "lower(trim($json.name))",
    "'prerelease' if '-' in $json.version else 'release'",
    "default($json.variant, 'any')",
    "$json.tags.length > 0 && contains($json.tags, 'beta')",
    "!$json.done || $json.size === 3",
    "$json.a !== null",
    "[1, 2][0] + {'a': 1}['a']",
    "$json.s[1:3]",
    "-1 ** 2 // 3 % 2",
    "$json.a is None",
    "'$5 and ~ & | inside a string'",
    "'it\\'s ~' + \"a \\\" ! b\" && $json.a",
    "'unclosed && ~",
    "$json.a # a comment ~",
    "~1",
    "1 & 2",
    "1 | 2",
    "1 ^ 2",
    "1 << 2",
    "1 >> 2",
    "$json.a @ $json.b",
    "{1, 2}",
    "f'{1}'",
    "b'x'",
    "1j",
    "...",
    "$json.__class__",
    "__import__('os')",
    "(lambda: 1)()",
    "[x for x in [1]]",
    "(y := 1)",
    "$json.name.upper()",
    "len(*[[1]])",
    "round(1.5, ndigits=0)",
    "{**$json}",
    "open('x')",
    "$json[",
    "",
    "   ",
    "1 +",
    "'a' * (" * 300 + "1" + ")" * 300,
    "1 + " * 600 + "1",
    "'" + "a" * (MAX_EXPRESSION_CHARS - 2) + "'",
    "'" + "a" * (MAX_EXPRESSION_CHARS - 1) + "'",
]


def _engine_refuses(body: str) -> bool:
    try:
        expression_syntax.compile_expression(body)
    except ExpressionFailed:
        return True
    return False


def _loader_refuses(body: str) -> bool:
    return syntax_problem(body) is not None


@pytest.mark.parametrize("body", SAMPLES, ids=lambda body: repr(body[:40]))
def test_the_loader_and_the_engine_refuse_the_same_sample_expressions(
    body: str,
) -> None:
    assert _loader_refuses(body) == _engine_refuses(body)


def test_the_loader_allows_the_same_syntax_and_functions_as_the_engine() -> None:
    assert set(ALLOWED_NODES) == set(expression_syntax._ALLOWED_NODES)
    assert set(FUNCTION_NAMES) == set(FUNCTIONS)
    assert MAX_EXPRESSION_CHARS == expression_syntax.MAX_EXPRESSION_CHARS


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["$json", "$vars", "$node", "$input", ".", "a", "len", "[", "]",
             "{", "}", "(", ")", ":", ",", "'s'", "1", "1.5", "1j", "+", "-",
             "*", "**", "/", "//", "%", "~", "&", "|", "^", "<<", "@", "!",
             "&&", "||", "==", "===", "!=", "!==", "<", "in", "not", "is",
             "if", "else", "and", "or", "lambda", "for", "None", "null",
             "f'x'", "b'x'", "...", "__x", "=", ":="]
        ),
        max_size=10,
    ).map(" ".join)
)  # fmt: skip
def test_random_expressions_get_the_same_verdict_from_the_loader_and_the_engine(
    body: str,
) -> None:
    assert _loader_refuses(body) == _engine_refuses(body)


@pytest.mark.parametrize(
    "text",
    [
        "{{ $json.a }} and {{ $json.b }}",
        '{{ {"a": {"b": 1}}["a"]["b"] }}',
        '{{ {"a": {"b": 1}} }}',
        "{{ $json.a }} }} {{ 1 }}",
        "{{ 1 +",
        "{{ ~1 }} {{ 1 }}",
        "{{ 1 }} {{ ~1 }}",
    ],
)
def test_templates_are_split_and_judged_as_the_engine_splits_them(text: str) -> None:
    bodies, unterminated = expressions_in(text)
    loader_refuses = unterminated or any(map(_loader_refuses, bodies))

    try:
        expression_syntax.compile_template(text)
        engine_refuses = False
    except ExpressionFailed:
        engine_refuses = True

    assert loader_refuses == engine_refuses


def _with_value(text: str) -> dict[str, Any]:
    path = next(path for path in fixture_paths("valid") if path.stem == "linear")
    document = json.loads(path.read_text())
    document["nodes"][1]["parameters"]["values"]["probe"] = text
    return document


def _errors(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(problem.code, problem.field) for problem in validate(document).errors]


def test_an_expression_longer_than_the_engine_allows_is_too_large() -> None:
    body = " '" + "a" * MAX_EXPRESSION_CHARS + "' "

    errors = _errors(_with_value("{{" + body + "}}"))

    assert errors == [("EXPRESSION_TOO_LARGE", "nodes[1].parameters.values.probe")]


def test_an_expression_at_the_engines_limit_is_valid() -> None:
    body = "'" + "a" * (MAX_EXPRESSION_CHARS - 2) + "'"

    assert _errors(_with_value("{{" + body + "}}")) == []


def test_an_operator_the_engine_forbids_is_an_invalid_expression() -> None:
    errors = _errors(_with_value("{{ ~1 }}"))

    assert errors == [("INVALID_EXPRESSION", "nodes[1].parameters.values.probe")]


def test_percent_formatting_of_literal_text_is_an_invalid_expression() -> None:
    # The engine refuses % on text (printf widths build huge strings); with
    # literal text on the left the loader can tell before the run.
    errors = _errors(_with_value("{{ 'x%d' % 5 }}"))

    assert errors == [("INVALID_EXPRESSION", "nodes[1].parameters.values.probe")]


def test_remainder_of_numbers_is_a_valid_expression() -> None:
    assert _errors(_with_value("{{ $json.size % 2 }}")) == []


def test_a_variable_default_too_long_for_the_engine_is_too_large() -> None:
    document = _with_value("{{ $vars.limit }}")
    long_body = "1" + " + 1" * MAX_EXPRESSION_CHARS
    document["variables"]["limit"]["default"] = "{{ " + long_body + " }}"

    assert _errors(document) == [("EXPRESSION_TOO_LARGE", "variables.limit.default")]


def test_the_javascript_spellings_the_engine_reads_are_valid() -> None:
    text = "{{ !$json.done && ($json.size === 3 || $json.kind !== 'x') }}"

    assert _errors(_with_value(text)) == []
