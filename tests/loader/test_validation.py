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
