"""Bundled and per-tenant workflow files, and names that cannot escape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loader import Catalog
from loader.document import MAX_BYTES
from packagerepo.errors import (
    Forbidden,
    InvalidRequest,
    InvalidWorkflow,
    WorkflowNotFound,
)
from tests.loader.conftest import fixture_paths


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    for path in fixture_paths("valid")[:2]:
        (bundled / path.name).write_bytes(path.read_bytes())
    return Catalog(bundled, tmp_path / "data")


def _document() -> dict:
    return json.loads(fixture_paths("valid")[-1].read_text())


def test_names_list_bundled_workflows_and_the_tenants_own(catalog: Catalog) -> None:
    catalog.save("acme", "nightly-sync", _document())

    assert catalog.names("acme") == ["branching", "linear", "nightly-sync"]
    assert catalog.names("globex") == ["branching", "linear"]


def test_a_saved_workflow_reads_back_as_the_tenants(catalog: Catalog) -> None:
    catalog.save("acme", "nightly", _document())

    document, source = catalog.read("acme", "nightly")

    assert (document, source) == (_document(), "tenant")
    path = catalog.data_dir / "tenants" / "acme" / "workflows" / "nightly.json"
    assert json.loads(path.read_text()) == _document()


def test_a_bundled_workflow_reads_as_bundled(catalog: Catalog) -> None:
    document, source = catalog.read("globex", "linear")

    assert source == "bundled"
    assert document["id"] == "wf-linear"


def test_another_tenants_workflow_is_not_found(catalog: Catalog) -> None:
    catalog.save("acme", "private", _document())

    with pytest.raises(WorkflowNotFound):
        catalog.read("globex", "private")


def test_bundled_names_are_read_only(catalog: Catalog) -> None:
    with pytest.raises(Forbidden):
        catalog.save("acme", "linear", _document())


def test_saving_again_replaces_the_file_and_leaves_no_temporary(
    catalog: Catalog,
) -> None:
    catalog.save("acme", "nightly", {"id": "old"})
    catalog.save("acme", "nightly", _document())

    folder = catalog.tenant_dir("acme")
    assert [path.name for path in folder.iterdir()] == ["nightly.json"]
    assert catalog.read("acme", "nightly")[0] == _document()


@pytest.mark.parametrize(
    "name",
    [
        "../linear",
        "..",
        "a/b",
        "a\\b",
        "/etc/passwd",
        "UPPER",
        "-leading-dash",
        "with.dot",
        "nul\x00",
        "a" * 65,
        "",
        "\u2024\u2024",
        "caf\u00e9",
    ],
)
def test_unsafe_names_are_refused(catalog: Catalog, name: str) -> None:
    with pytest.raises(InvalidRequest):
        catalog.read("acme", name)
    with pytest.raises(InvalidRequest):
        catalog.save("acme", name, _document())


@pytest.mark.parametrize("tenant", ["..", "../globex", "a/b", "", ".hidden"])
def test_unsafe_tenants_are_refused(catalog: Catalog, tenant: str) -> None:
    with pytest.raises(InvalidRequest):
        catalog.save(tenant, "nightly", _document())


def test_an_unknown_name_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(WorkflowNotFound):
        catalog.read("acme", "missing")


def _stored_bytes(catalog: Catalog, name: str) -> bytes:
    return (catalog.tenant_dir("acme") / f"{name}.json").read_bytes()


def test_a_workflow_is_stored_compactly_with_its_text_as_written(
    catalog: Catalog,
) -> None:
    document = {**_document(), "name": "Café ☕ 日本"}

    catalog.save("acme", "compact", document)

    stored = _stored_bytes(catalog, "compact")
    compact = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    assert stored == compact.encode() + b"\n"
    assert "Café ☕ 日本".encode() in stored
    assert catalog.read("acme", "compact")[0] == document


def test_a_lone_surrogate_is_stored_as_its_escape_and_reads_back(
    catalog: Catalog,
) -> None:
    document = {**_document(), "name": "half \ud800 of a pair"}

    catalog.save("acme", "surrogate", document)

    assert b"half \\ud800 of a pair" in _stored_bytes(catalog, "surrogate")
    assert catalog.read("acme", "surrogate")[0] == document


def test_a_workflow_too_large_to_read_back_is_refused_and_not_stored(
    catalog: Catalog,
) -> None:
    document = {**_document(), "meta": {"padding": "x" * MAX_BYTES}}

    with pytest.raises(InvalidWorkflow) as refused:
        catalog.save("acme", "huge", document)

    assert [detail["code"] for detail in refused.value.details] == [
        "DOCUMENT_TOO_LARGE"
    ]
    assert catalog.names("acme") == ["branching", "linear"]
