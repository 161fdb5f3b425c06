"""How validation reads documents: messages, modes, normalisation, limits."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from loader import Problem, Report, parse_document, validate
from loader.registry import REGISTRY_PATH, load_registry, registry_from_bytes
from loader.schema import CompiledSchema
from packagerepo.errors import InvalidWorkflow, WorkflowValidationFailed
from tests.loader.conftest import fixture_paths


def _fixture(name: str, kind: str = "valid") -> dict[str, Any]:
    path = next(path for path in fixture_paths(kind) if path.stem == name)
    return json.loads(path.read_text())


def _codes(report: Report) -> list[str]:
    return [problem.code for problem in report.errors + report.warnings]


def test_a_document_with_many_problems_reports_them_all_at_once() -> None:
    document = _fixture("linear")
    document["name"] = ""
    document["nodes"][1]["onError"] = "explode"
    document["nodes"][2]["parameters"]["body"] = "{{ $node['Missing'].json }}"
    document["connections"]["Ghost"] = {"main": [[]]}

    report = validate(document)

    assert set(_codes(report)) >= {
        "EMPTY_NAME",
        "INVALID_ON_ERROR",
        "UNKNOWN_NODE_REFERENCE",
        "UNKNOWN_CONNECTION_SOURCE",
    }


def test_field_paths_point_at_the_offending_parameter() -> None:
    document = _fixture("linear")
    document["nodes"][1]["parameters"]["values"]["message"] = "{{ $vars.nope }}"

    report = validate(document)

    assert report.errors == [
        Problem(
            "error",
            "UNKNOWN_VARIABLE_REFERENCE",
            "nodes[1].parameters.values.message",
            "The expression reads variable 'nope', which is not declared.",
        )
    ]


def test_a_cycle_is_named_in_the_order_it_runs() -> None:
    path = next(path for path in fixture_paths("invalid") if path.stem == "CYCLE")

    report = validate(json.loads(path.read_bytes()))

    assert report.errors[0].message == (
        "Connections form a cycle: Set Fields -> Check -> Again -> Set Fields."
    )


def test_an_id_keyed_connection_names_the_node_the_id_belongs_to() -> None:
    document = _fixture("linear")
    document["connections"]["n1"] = document["connections"].pop("Start")

    report = validate(document)

    assert "node 'Start'" in report.errors[0].message


def test_legacy_dict_connections_are_normalised_into_lists_with_a_warning() -> None:
    document = _fixture("linear")
    document["connections"]["Start"]["main"] = {
        "0": [{"node": "Set Fields", "type": "main", "index": 0}]
    }

    parsed = parse_document(json.dumps(document))
    report = validate(parsed)

    assert parsed["connections"]["Start"]["main"] == [
        [{"node": "Set Fields", "type": "main", "index": 0}]
    ]
    assert report.errors == []
    assert _codes(report) == ["LEGACY_CONNECTIONS"]


def test_strict_mode_makes_warnings_fail() -> None:
    document = _fixture("linear")
    document["nodes"].append(
        {
            "id": "n9",
            "name": "Orphan",
            "type": "logic.noop",
            "typeVersion": 1,
            "position": [0, 300],
            "parameters": {},
        }
    )

    assert validate(document).valid
    assert not validate(document, strict=True).valid


def test_raise_for_errors_raises_with_every_problem_as_details() -> None:
    document = _fixture("linear")
    document["nodes"][1]["type"] = "data.unknown"
    document["nodes"][2]["typeVersion"] = 9

    with pytest.raises(WorkflowValidationFailed) as raised:
        validate(document).raise_for_errors()

    assert raised.value.message == "Workflow validation failed: 2 error(s)"
    assert {detail["code"] for detail in raised.value.details} == {
        "UNKNOWN_NODE_TYPE",
        "UNSUPPORTED_TYPE_VERSION",
    }


def test_a_valid_report_does_not_raise() -> None:
    validate(_fixture("linear")).raise_for_errors()


def test_the_parameter_depth_limit_is_configurable() -> None:
    document = _fixture("linear")
    document["nodes"][1]["parameters"]["values"]["user"] = {"name": "x"}

    assert "PARAMETER_TOO_DEEP" in _codes(validate(document))
    assert validate(document, max_parameter_depth=3).valid


def test_deep_parameters_of_unregistered_types_are_only_a_warning() -> None:
    document = _fixture("manual_trigger_http", kind="n8n")

    report = validate(document, use_registry=False)

    assert report.valid
    assert set(_codes(report)) == {"PARAMETER_TOO_DEEP"}


def test_without_the_registry_unknown_node_types_are_not_errors() -> None:
    document = _fixture("linear")
    document["nodes"][1]["type"] = "n8n-nodes-base.set"

    assert "UNKNOWN_NODE_TYPE" in _codes(validate(document))
    assert validate(document, use_registry=False).errors == []


def test_a_longer_string_containing_object_object_is_fine() -> None:
    document = _fixture("linear")
    document["meta"] = {"code": 'console.log(String({}) === "[object Object]")'}

    assert validate(document).valid


def test_object_object_is_found_at_any_depth_outside_parameters() -> None:
    document = _fixture("linear")
    document["meta"] = {"a": [{"b": ["[object Object]"]}]}

    report = validate(document)

    assert [(p.code, p.field) for p in report.errors] == [
        ("OBJECT_OBJECT_VALUE", "meta.a[0].b[0]")
    ]


def test_a_tenant_id_equal_to_the_callers_tenant_is_accepted() -> None:
    document = _fixture("branching")

    assert validate(document, tenant="acme").valid
    assert _codes(validate(document, tenant="globex")) == ["TENANT_MISMATCH"]


def test_the_output_count_of_a_switch_follows_its_cases() -> None:
    document = _fixture("switch_merge")
    document["nodes"][1]["parameters"]["cases"] = ["wheel"]

    report = validate(document)

    assert [(p.code, p.field) for p in report.errors] == [
        ("INVALID_OUTPUT_INDEX", "connections.Route.main[2]")
    ]


def test_a_registry_input_bound_limits_target_indices() -> None:
    registry_document = json.loads(REGISTRY_PATH.read_bytes())
    registry_document["nodeTypes"]["logic.merge"]["inputs"] = 2
    registry = registry_from_bytes(json.dumps(registry_document).encode())

    report = validate(_fixture("switch_merge"), registry=registry)

    assert [(p.code, p.field) for p in report.errors] == [
        ("INVALID_INPUT_INDEX", "connections.Other.main[0][0].index")
    ]


def test_validation_leaves_a_parsed_document_usable_and_unchanged() -> None:
    document = parse_document(json.dumps(_fixture("switch_merge")))
    before = copy.deepcopy(document)

    validate(document)

    assert document == before


def test_duplicate_keys_are_refused_with_the_key_named() -> None:
    with pytest.raises(InvalidWorkflow) as raised:
        parse_document(b'{"a": 1, "b": {"c": 1, "c": 2}}')

    assert raised.value.code == "INVALID_WORKFLOW"
    assert raised.value.details[0]["code"] == "DUPLICATE_KEY"
    assert "'c'" in raised.value.details[0]["message"]


def test_brackets_inside_strings_do_not_count_towards_depth() -> None:
    document = _fixture("linear")
    document["meta"] = {"text": "[" * 500 + "{" * 500}

    assert parse_document(json.dumps(document))["meta"] == document["meta"]


@pytest.mark.parametrize("node_type", sorted(load_registry().types))
def test_every_registry_parameter_schema_is_a_valid_2020_12_schema(
    node_type: str,
) -> None:
    schema = load_registry().get(node_type)["parameters"]

    compiled = CompiledSchema.of(schema)

    assert compiled.validator.schema is schema


def _with_wait(milliseconds: Any) -> dict[str, Any]:
    document = _fixture("linear")
    document["nodes"][1] = {
        "id": "n2",
        "name": "Set Fields",
        "type": "logic.wait",
        "typeVersion": 1,
        "position": [200, 0],
        "parameters": {"milliseconds": milliseconds},
    }
    return document


@pytest.mark.parametrize("milliseconds", ["5", "", "soon", "5 {{ 1 }}", "{{ 1 }}ms"])
def test_a_wait_refuses_text_that_is_not_one_expression(milliseconds: str) -> None:
    report = validate(_with_wait(milliseconds))

    assert [(p.code, p.field) for p in report.errors] == [
        ("PARAMETER_SCHEMA", "nodes[1].parameters.milliseconds")
    ]


@pytest.mark.parametrize(
    "milliseconds", [0, 5, 60000, "{{ $vars.limit }}", "={{ $json.ms }}", " {{ 1 }} "]
)
def test_a_wait_takes_whole_milliseconds_or_one_expression(milliseconds: Any) -> None:
    report = validate(_with_wait(milliseconds))

    assert report.errors == []


def _variables_as_a_list() -> dict[str, Any]:
    document = _fixture("linear")
    document["variables"] = [
        {"name": name, **declaration}
        for name, declaration in document["variables"].items()
    ]
    return document


def test_variables_may_be_a_list_of_named_declarations_as_the_engine_reads_them() -> (
    None
):
    from worker.variables import variable_declarations

    document = _variables_as_a_list()

    assert validate(document, strict=True).to_dict()["valid"] is True
    assert set(variable_declarations(document["variables"])) == {
        "limit",
        "greeting",
        "double_limit",
        "since",
    }


def test_a_list_of_variables_is_held_to_the_same_rules_with_paths_by_position() -> None:
    document = _variables_as_a_list()
    document["variables"][0]["name"] = "9lives"
    document["variables"][1]["default"] = 5
    document["variables"][2]["type"] = "float"
    document["variables"].append({"type": "any"})
    document["nodes"][1]["parameters"]["values"]["x"] = "{{ $vars.limit }}"

    report = validate(document)

    assert sorted((p.code, p.field) for p in report.errors) == [
        ("INVALID_VARIABLE_NAME", "variables[0].name"),
        ("INVALID_VARIABLE_TYPE", "variables[2].type"),
        ("MISSING_FIELD", "variables[4].name"),
        ("UNKNOWN_VARIABLE_REFERENCE", "nodes[1].parameters.values.x"),
        ("UNKNOWN_VARIABLE_REFERENCE", "variables[2].default"),
        ("VARIABLE_DEFAULT_TYPE", "variables[1].default"),
    ]


def test_a_list_that_declares_a_variable_twice_is_refused() -> None:
    document = _variables_as_a_list()
    document["variables"].append({"name": "limit", "type": "number", "default": 3})

    report = validate(document)

    assert [(p.code, p.field) for p in report.errors] == [
        ("DUPLICATE_VARIABLE_NAME", "variables[4].name")
    ]


def test_a_repeated_connection_is_refused_at_the_repeat() -> None:
    document = _fixture("linear")
    targets = document["connections"]["Start"]["main"][0]
    targets.extend(
        [dict(targets[0]), {"index": 0, "type": "main", "node": "Set Fields"}]
    )

    report = validate(document)

    assert [(p.code, p.field, p.message) for p in report.errors] == [
        (
            "DUPLICATE_CONNECTION",
            f"connections.Start.main[0][{position}]",
            "The connection from 'Start' main[0] to 'Set Fields' input 0 "
            "repeats connections.Start.main[0][0].",
        )
        for position in (1, 2)
    ]


def test_the_same_target_from_two_outputs_or_at_two_inputs_is_no_repeat() -> None:
    document = _fixture("switch_merge")
    route = document["connections"]["Route"]["main"]
    route[1].append(dict(route[0][0]))
    route[0].append({**route[0][0], "index": 1})

    assert "DUPLICATE_CONNECTION" not in _codes(validate(document))
