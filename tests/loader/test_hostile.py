"""Hostile documents get a coded refusal, never a crash or a hang."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader import Report, expressions, parse_document, validate
from loader.document import _JSON_STRING, load_json
from loader.regexes import is_catastrophic
from packagerepo.errors import InvalidWorkflow, PackageRepoError
from tests.loader.conftest import noop_nodes

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=40,
)

node_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=5), st.integers()),
        "name": st.one_of(st.sampled_from(["A", "B", "C", ""]), json_values),
        "type": st.one_of(
            st.sampled_from(["trigger.start", "logic.if", "logic.switch", "x.y"]),
            json_values,
        ),
        "typeVersion": st.one_of(st.integers(), st.floats(), json_values),
        "position": json_values,
        "parameters": json_values,
        "onError": st.sampled_from(["continueErrorOutput", "nope"]),
    },
)

workflow_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "name": json_values,
        "nodes": st.one_of(st.lists(node_like, max_size=6), json_values),
        "connections": st.one_of(
            st.dictionaries(
                st.sampled_from(["A", "B", "C", "Z"]),
                st.dictionaries(
                    st.sampled_from(["main", "error", "other"]),
                    st.one_of(
                        st.lists(
                            st.one_of(
                                st.lists(
                                    st.fixed_dictionaries(
                                        {
                                            "node": st.sampled_from(["A", "B", "C"]),
                                            "type": st.just("main"),
                                            "index": json_values,
                                        }
                                    ),
                                    max_size=3,
                                ),
                                json_values,
                            ),
                            max_size=3,
                        ),
                        json_values,
                    ),
                ),
            ),
            json_values,
        ),
        "variables": json_values,
        "settings": json_values,
        "tenantId": json_values,
    },
)


def _outcome(raw: bytes | str) -> Report | PackageRepoError:
    try:
        return validate(parse_document(raw), tenant="acme")
    except PackageRepoError as refused:
        return refused


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_gives_a_report_or_a_coded_refusal(value: Any) -> None:
    outcome = _outcome(json.dumps(value))

    assert isinstance(outcome, Report | InvalidWorkflow)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(workflow_like)
def test_random_workflow_shaped_documents_always_give_a_report(value: Any) -> None:
    assert isinstance(validate(value, tenant="acme"), Report)
    assert isinstance(validate(value, use_registry=False, strict=True), Report)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_random_bytes_give_a_report_or_a_coded_refusal(raw: bytes) -> None:
    outcome = _outcome(raw)

    assert isinstance(outcome, Report | InvalidWorkflow)


@settings(max_examples=200)
@given(st.text(alphabet="()[]{}|*+?.\\^$ab{},0123456789", max_size=30))
def test_the_regex_heuristic_never_raises(pattern: str) -> None:
    assert isinstance(is_catastrophic(pattern), bool)


def _refusal_code(raw: bytes | str, **limits: int) -> str:
    try:
        parse_document(raw, **limits)
    except InvalidWorkflow as refused:
        return refused.details[0]["code"]
    raise AssertionError("the document was accepted")


def test_nesting_far_beyond_the_recursion_limit_is_refused_before_parsing() -> None:
    assert _refusal_code("[" * 200_000 + "]" * 200_000) == "DOCUMENT_TOO_DEEP"


def test_unbalanced_deep_nesting_is_refused_as_too_deep() -> None:
    assert _refusal_code('{"a":' * 100_000) == "DOCUMENT_TOO_DEEP"


def test_a_deep_depth_limit_does_not_let_recursion_crash_the_parser() -> None:
    raw = "[" * 100_000 + "]" * 100_000

    assert _refusal_code(raw, max_depth=10**9) == "DOCUMENT_TOO_DEEP"


def test_a_deep_python_object_handed_to_validate_is_reported_not_crashed() -> None:
    document: dict[str, Any] = {}
    current = document
    for _ in range(50_000):
        current["next"] = {}
        current = current["next"]

    report = validate(document)

    assert [problem.code for problem in report.errors] == ["DOCUMENT_TOO_DEEP"]


def test_a_document_over_the_size_limit_is_refused_before_decoding() -> None:
    assert _refusal_code(b"\xff" * 2_000_000) == "DOCUMENT_TOO_LARGE"


def test_thousands_of_nodes_are_refused_with_one_problem() -> None:
    nodes = [{"id": str(i), "name": str(i)} for i in range(5000)]

    report = validate({"id": "w", "name": "w", "nodes": nodes, "connections": {}})

    assert [problem.code for problem in report.errors] == ["TOO_MANY_NODES"]


def test_non_utf8_bytes_are_refused_with_a_code() -> None:
    assert _refusal_code(b'{"name": "caf\xe9"}') == "INVALID_ENCODING"


def test_infinity_is_not_json() -> None:
    assert _refusal_code('{"a": Infinity}') == "INVALID_JSON"


def test_a_long_cycle_of_variables_is_reported_without_recursion() -> None:
    names = [f"v{i}" for i in range(3000)]
    variables = {
        name: {"type": "any", "default": f"{{{{ $vars.{names[(i + 1) % 3000]} }}}}"}
        for i, name in enumerate(names)
    }

    report = validate({"id": "w", "name": "w", "nodes": [], "variables": variables})

    assert "CIRCULAR_VARIABLE" in {problem.code for problem in report.errors}


def test_a_long_chain_of_nodes_is_validated_without_recursion() -> None:
    count = 1999
    nodes = noop_nodes(count)
    connections = {
        f"N{i}": {"main": [[{"node": f"N{i + 1}", "type": "main", "index": 0}]]}
        for i in range(count - 1)
    }
    connections[f"N{count - 1}"] = {
        "main": [[{"node": "N1", "type": "main", "index": 0}]]
    }

    report = validate(
        {"id": "w", "name": "w", "nodes": nodes, "connections": connections}
    )

    assert [problem.code for problem in report.errors] == ["CYCLE"]


def test_a_pathological_pattern_in_a_parameter_is_a_warning_not_a_hang() -> None:
    document = {
        "id": "w",
        "name": "w",
        "nodes": [
            {
                "id": "a",
                "name": "A",
                "type": "trigger.start",
                "typeVersion": 1,
                "position": [0, 0],
                "parameters": {},
            },
            {
                "id": "b",
                "name": "B",
                "type": "data.set",
                "typeVersion": 1,
                "position": [0, 0],
                "parameters": {"values": {"namePattern": "^(a+)+$"}},
            },
        ],
        "connections": {"A": {"main": [[{"node": "B", "type": "main", "index": 0}]]}},
    }

    report = validate(document)

    assert report.valid
    assert [problem.code for problem in report.warnings] == ["CATASTROPHIC_REGEX"]


def _start_and_set(parameters: dict[str, Any]) -> dict[str, Any]:
    nodes = [
        {
            "id": name.lower(),
            "name": name,
            "type": node_type,
            "typeVersion": 1,
            "position": [0, 0],
            "parameters": {} if name == "S" else parameters,
        }
        for name, node_type in (("S", "trigger.start"), ("N", "data.set"))
    ]
    return {"id": "w", "name": "w", "nodes": nodes, "connections": {}}


def test_thousands_of_repeated_connections_are_each_refused() -> None:
    document = _start_and_set({"values": {}})
    edge = {"node": "N", "type": "main", "index": 0}
    document["connections"] = {"S": {"main": [[dict(edge) for _ in range(5000)]]}}

    report = validate(document)

    assert {problem.code for problem in report.errors} == {"DUPLICATE_CONNECTION"}
    assert len(report.errors) == 4999


def test_an_expression_with_a_thousand_closings_is_judged_quickly() -> None:
    closings = "(" * 50 + "1+" * 900 + "}}" * 1000
    values = {f"k{i}": f"{{{{ {i} {closings}" for i in range(100)}

    parses = []
    real_parse = expressions.ast.parse
    expressions._syntax_problem.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            expressions.ast,
            "parse",
            lambda *a, **k: parses.append(1) or real_parse(*a, **k),
        )
        report = validate(_start_and_set({"values": values}))

    # Each expression costs at most a few parses, never one per "}}".
    assert len(parses) <= len(values) * expressions._MAX_CANDIDATES
    assert {problem.code for problem in report.errors} == {"INVALID_EXPRESSION"}


@given(st.text(alphabet='"\\a[{\n', max_size=60))
def test_a_string_start_in_a_body_always_matches_so_the_depth_scan_is_linear(
    rest: str,
) -> None:
    """Found by an adversarial pass: an unclosed string of escaped quotes
    ("\"\"\"...) failed to match at its quote, so the scan retried at every
    escaped quote after it: quadratic, 200 KB held an API process a minute.
    A quote that opens a string must match, to its close or to the end."""
    text = '"' + rest

    assert _JSON_STRING.match(text) is not None


def test_an_unclosed_string_of_escaped_quotes_is_refused_as_invalid_json() -> None:
    raw = '"' + '\\"' * 500_000

    with pytest.raises(InvalidWorkflow) as refused:
        load_json(raw, max_bytes=2_000_000)

    assert refused.value.details[0]["code"] == "INVALID_JSON"
