"""Fixtures for the artifact repository tests: a store on a temporary DATA_DIR."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

import pytest

# Cheap hashes: these tests check behaviour, not bcrypt's cost.
os.environ.setdefault("BCRYPT_ROUNDS", "4")

from packagerepo.accounts import Identity
from packagerepo.config import Settings
from packagerepo.services import Services
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


@pytest.fixture
def repo_settings(data_dir: Path) -> Settings:
    return Settings(
        env="test",
        data_dir=data_dir,
        jwt_secret="repository-tests-secret-" + "s" * 32,
        max_upload_bytes=8 * 1024 * 1024,
        # Nothing in these tests talks to Redis; a closed port fails fast.
        redis_url="redis://127.0.0.1:1/0",
    )


@pytest.fixture
def repo_services(repo_settings: Settings) -> Services:
    return Services(repo_settings)


def build_app(services: Services):
    """The lead's app, with the artifact blueprint until create_app has it."""
    from api import create_app
    from api.artifacts import artifacts_bp

    app = create_app(services.settings, services)
    if "artifacts" not in app.blueprints:
        app.register_blueprint(artifacts_bp)
    return app


@pytest.fixture
def repo_app(repo_services: Services):
    return build_app(repo_services)


@pytest.fixture
def api(repo_app):
    """A test client of the API on this test's own DATA_DIR."""
    return repo_app.test_client()


@pytest.fixture
def anonymous_app(repo_services: Services):
    settings = replace(repo_services.settings, allow_anon_read=True)
    return build_app(Services(settings))


@pytest.fixture
def token(repo_services: Services):
    """A bearer header for a user of ``tenant`` holding ``scopes``."""

    # A token speaks for a user that exists as the token says; each user is
    # created once (saving it again would revoke its earlier tokens), the
    # default one before the test runs, so snapshots of DATA_DIR hold it.
    users: dict[tuple[str, ...], Identity] = {}

    def user(tenant: str, scopes: tuple[str, ...]) -> Identity:
        if (tenant, *scopes) not in users:
            users[(tenant, *scopes)] = repo_services.accounts.add_user(
                "-".join(("tester", tenant, *scopes)),
                "pw",
                tenant=tenant,
                scopes=list(scopes),
                replace=True,
            )
        return users[(tenant, *scopes)]

    def issue(tenant: str = TENANT, *scopes: str) -> dict[str, str]:
        identity = user(tenant, scopes or ("read", "write"))
        value, _ = repo_services.accounts.issue_token(identity)
        return {"Authorization": f"Bearer {value}"}

    user(TENANT, ("read", "write"))
    return issue
