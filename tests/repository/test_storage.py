"""Blob and record storage on a real temporary DATA_DIR."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os

import pytest

from packagerepo.errors import (
    AlreadyExists,
    BlobTooLarge,
    CoordinateInvalid,
    DigestMismatch,
    InvalidRequest,
    NotFound,
)
from repository.coordinates import Coordinate
from repository.storage import CHUNK_BYTES, normalise_digest

from .conftest import TENANT, tree_snapshot
from .publishers import publish_in_child


def sha256(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


class ExplodingStream(io.RawIOBase):
    """Delivers some bytes, then fails as a dropped connection would."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 2:
            raise ConnectionResetError("The client went away.")
        return b"x" * 1000


def test_a_blob_is_stored_under_its_sha256_and_reads_back_identically(store):
    content = os.urandom(3 * 1024 * 1024 + 17)

    digest, size = store.put_blob(TENANT, io.BytesIO(content), max_bytes=1 << 30)

    assert (digest, size) == (sha256(content), len(content))
    assert store.blob_path(TENANT, digest).read_bytes() == content
    assert store.has_blob(TENANT, digest)


def test_the_same_content_twice_is_stored_once(store, data_dir):
    first = store.put_blob(TENANT, io.BytesIO(b"same"), max_bytes=100)
    second = store.put_blob(TENANT, io.BytesIO(b"same"), max_bytes=100)

    assert first == second
    assert len(list((data_dir / "tenants").rglob("blobs/**/*[0-9a-f]"))) >= 1
    assert list((data_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize("declared", ["sha256:{hex}", "{hex}", "SHA256:{HEX}"])
def test_a_declared_digest_that_matches_is_accepted(store, declared):
    hex_digest = hashlib.sha256(b"payload").hexdigest()
    declared = declared.format(hex=hex_digest, HEX=hex_digest.upper())

    digest, _ = store.put_blob(
        TENANT, io.BytesIO(b"payload"), declared_digest=declared, max_bytes=100
    )

    assert digest == sha256(b"payload")


def test_a_digest_mismatch_leaves_nothing_behind(store, data_dir):
    before = tree_snapshot(data_dir)

    with pytest.raises(DigestMismatch):
        store.put_blob(
            TENANT,
            io.BytesIO(b"payload"),
            declared_digest=sha256(b"other"),
            max_bytes=100,
        )

    assert tree_snapshot(data_dir) == before
    assert not store.has_blob(TENANT, sha256(b"payload"))


def test_a_malformed_declared_digest_is_an_invalid_request(store):
    with pytest.raises(InvalidRequest):
        store.put_blob(
            TENANT, io.BytesIO(b"x"), declared_digest="md5:abc", max_bytes=100
        )


def test_a_blob_over_the_limit_leaves_nothing_behind(store, data_dir):
    before = tree_snapshot(data_dir)

    with pytest.raises(BlobTooLarge) as caught:
        store.put_blob(TENANT, io.BytesIO(b"x" * 101), max_bytes=100)

    assert caught.value.status == 413
    assert tree_snapshot(data_dir) == before


def test_a_blob_exactly_at_the_limit_is_accepted(store):
    _, size = store.put_blob(TENANT, io.BytesIO(b"x" * 100), max_bytes=100)

    assert size == 100


def test_an_upload_that_breaks_off_leaves_nothing_behind(store, data_dir):
    before = tree_snapshot(data_dir)

    with pytest.raises(ConnectionResetError):
        store.put_blob(TENANT, ExplodingStream(), max_bytes=1 << 20)

    assert tree_snapshot(data_dir) == before


def test_a_blob_over_the_limit_several_chunks_in_leaves_nothing_behind(store, data_dir):
    # Past the first chunk the copy is pipelined through a writer thread.
    before = tree_snapshot(data_dir)
    limit = 3 * CHUNK_BYTES + 5

    with pytest.raises(BlobTooLarge):
        store.put_blob(TENANT, io.BytesIO(b"x" * (limit + 1)), max_bytes=limit)

    assert tree_snapshot(data_dir) == before


def test_a_write_that_fails_several_chunks_in_is_raised_and_leaves_nothing(
    store, data_dir, monkeypatch
):
    import repository.storage

    before = tree_snapshot(data_dir)
    written: list[int] = []
    real_fdopen = os.fdopen

    class FullDisk(io.BufferedWriter):
        def write(self, data) -> int:
            written.append(len(data))
            if len(written) > 2:
                raise OSError(28, "No space left on device")
            return super().write(data)

    def full_disk_fdopen(descriptor, mode="r", *args, **kwargs):
        if mode == "wb":
            return FullDisk(io.FileIO(descriptor, "wb"))
        return real_fdopen(descriptor, mode, *args, **kwargs)

    monkeypatch.setattr(repository.storage.os, "fdopen", full_disk_fdopen)
    content = io.BytesIO(b"y" * (8 * CHUNK_BYTES))

    with pytest.raises(OSError, match="No space left"):
        store.put_blob(TENANT, content, max_bytes=1 << 30)

    assert tree_snapshot(data_dir) == before
    assert len(written) == 3  # the writer stopped at the failure


def test_publish_writes_a_complete_record(store, publish):
    record = publish("1.2.3", b"wheel bytes")

    coordinate = Coordinate.parse("acme", "tool", "1.2.3", "default")
    assert store.record(TENANT, coordinate) == record
    assert record["digest"] == sha256(b"wheel bytes")
    assert record["size"] == len(b"wheel bytes")
    assert record["created_by"] == "tester"
    assert set(record) == {
        "namespace",
        "name",
        "version",
        "variant",
        "digest",
        "size",
        "created_at",
        "created_by",
    }


def test_publishing_an_existing_coordinate_is_refused_and_keeps_the_first(
    store, publish
):
    first = publish("1.0.0", b"first")

    with pytest.raises(AlreadyExists) as caught:
        publish("1.0.0", b"second")

    assert caught.value.status == 409
    coordinate = Coordinate.parse("acme", "tool", "1.0.0", "default")
    assert store.record(TENANT, coordinate) == first
    assert list((store.data_dir / "tmp").iterdir()) == []


def test_publish_needs_a_stored_blob(store):
    coordinate = Coordinate.parse("acme", "tool", "1.0.0", "default")

    with pytest.raises(NotFound):
        store.publish(TENANT, coordinate, sha256(b"never stored"), created_by="x")

    assert not store.exists(TENANT, coordinate)


def test_a_missing_record_is_not_found(store):
    with pytest.raises(NotFound):
        store.record(TENANT, Coordinate.parse("acme", "tool", "9.9.9", "default"))


def test_locate_blob_returns_the_record_and_the_blob_path(store, publish):
    record = publish("1.0.0", b"content")

    found, path = store.locate_blob(
        TENANT, Coordinate.parse("acme", "tool", "1.0.0", "default")
    )

    assert found == record
    assert path.read_bytes() == b"content"


def test_versions_are_listed_in_semver_order(store, publish):
    for version in ["1.10.0", "1.0.0", "1.9.0", "1.0.0-rc.10", "1.0.0-rc.2"]:
        publish(version, version.encode())

    answer = store.version_list(TENANT, "ACME", "tool")

    assert answer == {
        "namespace": "acme",
        "name": "tool",
        "versions": ["1.0.0-rc.2", "1.0.0-rc.10", "1.0.0", "1.9.0", "1.10.0"],
    }


def test_latest_is_the_highest_release_even_when_prereleases_are_asked_for(
    store, publish
):
    for version in ["1.9.0", "1.10.0", "1.10.0-rc.1"]:
        publish(version, version.encode())

    assert store.latest(TENANT, "acme", "tool")["version"] == "1.10.0"
    answer = store.latest(TENANT, "acme", "tool", include_prerelease=True)
    assert answer == {
        "namespace": "acme",
        "name": "tool",
        "version": "1.10.0",
        "variants": ["default"],
    }


def test_latest_of_prereleases_only_is_not_found_unless_asked_for(store, publish):
    publish("2.0.0-rc.1", b"a")
    publish("2.0.0-rc.2", b"b")

    with pytest.raises(NotFound) as caught:
        store.latest(TENANT, "acme", "tool")

    assert "prerelease=true" in caught.value.message
    assert store.latest(TENANT, "acme", "tool", include_prerelease=True)["version"] == (
        "2.0.0-rc.2"
    )


def test_latest_of_a_variant_is_the_highest_release_that_has_it(store, publish):
    """Found by a fresh user: download_artifact without a version took the
    package's highest release and then found no such variant in it."""
    publish("1.0.0", b"linux", variant="linux-amd64")
    publish("1.1.0-rc.1", b"linux rc", variant="linux-amd64")
    publish("3.0.1", b"other", variant="default")

    answer = store.latest(TENANT, "acme", "tool", variant="Linux-AMD64")
    with_pre = store.latest(
        TENANT, "acme", "tool", variant="linux-amd64", include_prerelease=True
    )

    assert answer == {
        "namespace": "acme",
        "name": "tool",
        "version": "1.0.0",
        "variants": ["linux-amd64"],
    }
    assert with_pre["version"] == "1.1.0-rc.1"
    assert store.latest(TENANT, "acme", "tool")["version"] == "3.0.1"


def test_latest_of_a_variant_no_release_has_is_not_found(store, publish):
    publish("1.0.0", b"x", variant="default")

    with pytest.raises(NotFound) as caught:
        store.latest(TENANT, "acme", "tool", variant="darwin-arm64")

    assert "darwin-arm64" in caught.value.message


def test_an_unknown_package_is_not_found(store):
    with pytest.raises(NotFound):
        store.version_list(TENANT, "acme", "nothing")
    with pytest.raises(NotFound):
        store.latest(TENANT, "acme", "nothing")


def test_tenants_cannot_see_each_others_artifacts(store, publish):
    publish("1.0.0", b"secret", tenant="alpha")
    coordinate = Coordinate.parse("acme", "tool", "1.0.0", "default")

    with pytest.raises(NotFound):
        store.record("beta", coordinate)
    with pytest.raises(NotFound):
        store.version_list("beta", "acme", "tool")
    assert not store.has_blob("beta", sha256(b"secret"))


def test_another_tenant_publishing_the_same_coordinate_does_not_overwrite(
    store, publish
):
    mine = publish("1.0.0", b"alpha's", tenant="alpha")
    publish("1.0.0", b"beta's", tenant="beta")

    coordinate = Coordinate.parse("acme", "tool", "1.0.0", "default")
    assert store.record("alpha", coordinate) == mine


@pytest.mark.parametrize("tenant", ["..", "../other", "", "a/b", "\uff0e\uff0e"])
def test_a_hostile_tenant_is_refused_before_anything_is_written(
    store, data_dir, tenant
):
    before = tree_snapshot(data_dir)

    with pytest.raises(CoordinateInvalid):
        store.put_blob(tenant, io.BytesIO(b"x"), max_bytes=10)

    assert tree_snapshot(data_dir) == before


def test_digests_normalise_to_the_prefixed_lower_case_form():
    hex_digest = "AB" * 32

    assert normalise_digest(hex_digest) == "sha256:" + "ab" * 32
    with pytest.raises(InvalidRequest):
        normalise_digest("sha256:../../etc/passwd")


def test_concurrent_publishes_of_one_coordinate_from_processes_have_one_winner(
    store, data_dir
):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(10)
    results = context.Queue()
    children = [
        context.Process(
            target=publish_in_child,
            args=(str(data_dir), "1.0.0", f"content {i}".encode(), barrier, results),
        )
        for i in range(10)
    ]
    for child in children:
        child.start()
    outcomes = sorted(results.get(timeout=60) for _ in children)
    for child in children:
        child.join(timeout=60)

    assert outcomes == ["created"] + ["exists"] * 9
    coordinate = Coordinate.parse("acme", "tool", "1.0.0", "default")
    record = store.record(TENANT, coordinate)
    content = store.blob_path(TENANT, record["digest"]).read_bytes()
    assert record["created_by"] == f"child-{content!r}"


def test_concurrent_publishes_of_different_versions_are_all_listed(store, data_dir):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(20)
    results = context.Queue()
    versions = [f"1.{i}.0" for i in range(20)]
    children = [
        context.Process(
            target=publish_in_child,
            args=(str(data_dir), version, version.encode(), barrier, results),
        )
        for version in versions
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)

    assert outcomes == ["created"] * 20
    assert store.versions(TENANT, "acme", "tool") == versions


def test_records_on_disk_are_whole_json_documents(store, publish, data_dir):
    publish("1.0.0")

    for path in (data_dir / "tenants").rglob("*.json"):
        json.loads(path.read_bytes())


def test_check_reports_writable_storage(store):
    assert store.check()["ok"] is True


def test_stale_temporary_files_are_removed(store):
    stale = store.tmp_dir / "blob-crashed"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    fresh = store.tmp_dir / "blob-in-progress"
    fresh.write_bytes(b"partial")

    assert store.remove_stale_temporaries(older_than_seconds=3600) == 1
    assert not stale.exists()
    assert fresh.exists()


def test_a_job_rerun_gets_its_own_record_back_instead_of_a_conflict(store):
    digest, _ = store.put_blob(TENANT, io.BytesIO(b"rerun"), max_bytes=1 << 20)
    coordinate = Coordinate.parse("acme", "tool", "3.0.0", "default")

    first = store.publish(TENANT, coordinate, digest, created_by="u", job_id="job-1")
    again = store.publish(TENANT, coordinate, digest, created_by="u", job_id="job-1")

    assert again == first
    with pytest.raises(AlreadyExists):
        store.publish(TENANT, coordinate, digest, created_by="u", job_id="job-2")
    with pytest.raises(AlreadyExists):
        store.publish(TENANT, coordinate, digest, created_by="u")
