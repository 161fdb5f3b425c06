"""Every rule has a failing fixture and every valid fixture passes every rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from loader import Report, parse_document, validate
from loader.rules import RULES
from packagerepo.errors import InvalidWorkflow
from tests.loader.conftest import (
    BUNDLED,
    FIXTURE_MAX_BYTES,
    PROJECT,
    TENANT,
    expected_code,
    fixture_paths,
)


def _problem_codes(path: Path) -> tuple[set[str], set[str]]:
    """(error codes, warning codes) for the fixture at ``path``."""
    try:
        document = parse_document(path.read_bytes(), max_bytes=FIXTURE_MAX_BYTES)
    except InvalidWorkflow as refused:
        return {detail["code"] for detail in refused.details}, set()

    report = validate(document, tenant=TENANT)
    return (
        {problem.code for problem in report.errors},
        {problem.code for problem in report.warnings},
    )


@pytest.mark.parametrize("path", fixture_paths("invalid"), ids=lambda path: path.stem)
def test_each_invalid_fixture_reports_the_rule_it_is_named_after(path: Path) -> None:
    code = expected_code(path)
    errors, warnings = _problem_codes(path)

    found = warnings if RULES[code].severity == "warning" else errors
    assert code in found, f"{path.name}: errors={errors} warnings={warnings}"


@pytest.mark.parametrize("path", fixture_paths("valid"), ids=lambda path: path.stem)
def test_each_valid_fixture_has_no_errors_and_no_warnings(path: Path) -> None:
    report = validate(parse_document(path.read_bytes()), tenant=TENANT, strict=True)

    assert report.to_dict() == {"valid": True, "errors": [], "warnings": []}


@pytest.mark.parametrize(
    "path", sorted(BUNDLED.glob("*.json")), ids=lambda path: path.stem
)
def test_each_bundled_workflow_has_no_errors_and_no_warnings(path: Path) -> None:
    report = validate(parse_document(path.read_bytes()), strict=True)

    assert report.to_dict() == {"valid": True, "errors": [], "warnings": []}


@pytest.mark.parametrize("path", fixture_paths("n8n"), ids=lambda path: path.stem)
def test_n8n_exports_pass_without_the_registry_with_depth_warnings_at_most(
    path: Path,
) -> None:
    report = validate(parse_document(path.read_bytes()), use_registry=False)

    assert report.errors == []
    assert {problem.code for problem in report.warnings} <= {"PARAMETER_TOO_DEEP"}


def test_every_rule_code_has_an_invalid_fixture() -> None:
    covered = {expected_code(path) for path in fixture_paths("invalid")}

    assert set(RULES) - covered == set()


def test_every_invalid_fixture_is_named_after_a_known_rule_code() -> None:
    names = {expected_code(path) for path in fixture_paths("invalid")}

    assert names - set(RULES) == set()


def test_every_rule_code_is_published_with_its_meaning() -> None:
    published = (PROJECT / "docs" / "validation-rules.md").read_text()

    for code, rule in RULES.items():
        assert f"`{code}`" in published
        assert rule.meaning in published


def test_valid_fixtures_are_a_report_not_an_exception() -> None:
    path = fixture_paths("valid")[0]

    assert isinstance(validate(parse_document(path.read_bytes())), Report)
