"""Fixtures for the artifact repository tests: a store on a temporary DATA_DIR."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from repository.coordinates import Coordinate
from repository.storage import ArtifactStore

TENANT = "acme"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def store(data_dir: Path) -> ArtifactStore:
    return ArtifactStore(data_dir)


@pytest.fixture
def publish(store: ArtifactStore):
    """Store ``content`` and publish it at ``namespace/name/version/variant``."""

    def publish_one(
        version: str,
        content: bytes = b"artifact",
        *,
        tenant: str = TENANT,
        namespace: str = "acme",
        name: str = "tool",
        variant: str = "default",
    ) -> dict:
        digest, _ = store.put_blob(tenant, io.BytesIO(content), max_bytes=1 << 20)
        coordinate = Coordinate.parse(namespace, name, version, variant)
        return store.publish(tenant, coordinate, digest, created_by="tester")

    return publish_one


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` with its bytes."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
