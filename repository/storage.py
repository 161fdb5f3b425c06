"""Durable artifact storage under ``DATA_DIR``: blobs and metadata records.

Layout, one tree per tenant so tenants never see each other's artifacts::

    DATA_DIR/tmp/                                   temporary files
    DATA_DIR/tenants/<tenant>/blobs/sha256/<ab>/<hex>
    DATA_DIR/tenants/<tenant>/records/<ns>/<name>/<version>/<variant>.json

Blobs are content-addressed: a blob is streamed into a temporary file in
``DATA_DIR/tmp`` (the same filesystem, so the final rename is atomic) while
its SHA-256 is computed, fsynced, checked against the digest the client
declared and the size limit, and only then renamed into place. A blob that
already exists is kept and the new copy dropped. A failure at any step
removes the temporary file, so no partial blob is ever visible; a crash
leaves at most an orphaned file in ``tmp/``, which
``remove_stale_temporaries`` deletes.

Records are write-once. A record is written completely to a temporary file,
fsynced and then hard-linked to its final name: ``link`` refuses to replace
an existing name, atomically and across processes, so of several concurrent
publishes of one coordinate exactly one wins and the others get
``AlreadyExists``.

Every operation the direct endpoints and the workflow nodes perform lives
here once: both call the same methods and return the same dictionaries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import re
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from packagerepo.errors import (
    AlreadyExists,
    BlobTooLarge,
    CoordinateInvalid,
    DigestMismatch,
    InvalidRequest,
    NotFound,
)
from packagerepo.files import fsync_directory
from repository.coordinates import (
    Coordinate,
    normalise_name,
    normalise_namespace,
    normalise_tenant,
    normalise_variant,
)
from repository.versions import latest as latest_version
from repository.versions import sort_versions

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
PIPELINE_CHUNKS = 4
"""Chunks an upload may have read ahead of its writer (memory: 4 MiB)."""
"""How much of an upload is held in memory at once."""

DIGEST_PATTERN = re.compile(r"(?:sha256:)?([0-9a-f]{64})")
RECORD_SUFFIX = ".json"


def normalise_digest(raw: Any) -> str:
    """``sha256:<hex>`` from ``sha256:<hex>`` or bare hex, or ``InvalidRequest``."""
    if not isinstance(raw, str):
        raise InvalidRequest("A digest must be a string 'sha256:<64 hex digits>'.")
    match = DIGEST_PATTERN.fullmatch(raw.strip().lower())
    if match is None:
        raise InvalidRequest("A digest must look like 'sha256:<64 hex digits>'.")
    return f"sha256:{match.group(1)}"


def _count(length: int, size: int, max_bytes: int) -> int:
    size += length
    if size > max_bytes:
        raise BlobTooLarge(f"The blob is larger than {max_bytes} bytes.")
    return size


def _pipelined(
    stream: ByteSource,
    chunk: bytes,
    size: int,
    max_bytes: int,
    hasher: Any,
    target: BinaryIO,
) -> int:
    """Read the rest of ``stream`` (``chunk`` first) here; hash and write it
    on a writer thread. Returns the size; re-raises the writer's error."""
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=PIPELINE_CHUNKS)
    failures: list[BaseException] = []

    def write_chunks() -> None:
        try:
            while (pending := chunks.get()) is not None:
                hasher.update(pending)
                target.write(pending)
        except BaseException as error:
            failures.append(error)
            while chunks.get() is not None:
                pass  # keep taking, so the reader never blocks on a full queue

    writer = threading.Thread(target=write_chunks, name="blob-writer", daemon=True)
    writer.start()
    try:
        while chunk and not failures:
            size = _count(len(chunk), size, max_bytes)
            chunks.put(chunk)
            chunk = stream.read(CHUNK_BYTES)
    finally:
        chunks.put(None)
        writer.join()
    if failures:
        raise failures[0]
    return size


def _remove_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class ByteSource(Protocol):
    """What a blob is read from: an open file or a request body."""

    def read(self, size: int = -1, /) -> bytes: ...


class ArtifactStore:
    """Blobs and write-once metadata records for every tenant."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(os.path.realpath(data_dir))
        self.tmp_dir = self.data_dir / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    # -- paths ------------------------------------------------------------

    def _inside(self, path: Path) -> Path:
        """``path`` after checking it cannot leave ``DATA_DIR``.

        The coordinate patterns already make this impossible; the check is
        a second lock on the same door.
        """
        resolved = os.path.realpath(path)
        if os.path.commonpath([resolved, self.data_dir]) != str(self.data_dir):
            raise CoordinateInvalid("The artifact path leaves the data directory.")
        return path

    def _tenant_dir(self, tenant: str) -> Path:
        return self.data_dir / "tenants" / normalise_tenant(tenant)

    def blob_path(self, tenant: str, digest: str) -> Path:
        """Where the blob with ``digest`` lives (whether or not it exists)."""
        hex_digest = normalise_digest(digest).removeprefix("sha256:")
        path = self._tenant_dir(tenant) / "blobs" / "sha256" / hex_digest[:2]
        return self._inside(path / hex_digest)

    def _package_dir(self, tenant: str, namespace: str, name: str) -> Path:
        path = self._tenant_dir(tenant) / "records"
        path = path / normalise_namespace(namespace) / normalise_name(name)
        return self._inside(path)

    def _record_path(self, tenant: str, coordinate: Coordinate) -> Path:
        path = self._package_dir(tenant, coordinate.namespace, coordinate.name)
        path = path / coordinate.version / (coordinate.variant + RECORD_SUFFIX)
        return self._inside(path)

    # -- blobs ------------------------------------------------------------

    def put_blob(
        self,
        tenant: str,
        stream: ByteSource,
        *,
        declared_digest: str | None = None,
        max_bytes: int,
    ) -> tuple[str, int]:
        """Store the bytes of ``stream`` and return ``(digest, size)``.

        ``declared_digest`` (``sha256:<hex>`` or hex), when given, must match
        the bytes. Over ``max_bytes`` is ``BlobTooLarge``, a wrong digest
        ``DigestMismatch``; either leaves nothing behind.
        """
        tenant = normalise_tenant(tenant)
        expected = normalise_digest(declared_digest) if declared_digest else None
        descriptor, temporary = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")
        try:
            with os.fdopen(descriptor, "wb") as target:
                digest, size = self._copy_hashed(stream, target, max_bytes)
            if expected is not None and expected != digest:
                raise DigestMismatch(
                    f"The blob's digest is {digest}, not the declared {expected}."
                )

            final = self.blob_path(tenant, digest)
            if final.exists():
                logger.debug("Blob %s already stored; the new copy is dropped.", digest)
                _remove_quietly(temporary)
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, final)
                fsync_directory(final.parent)
        except BaseException:
            _remove_quietly(temporary)
            raise

        logger.info("Stored blob %s (%d bytes) for tenant %s.", digest, size, tenant)
        return digest, size

    @staticmethod
    def _copy_hashed(
        stream: ByteSource, target: BinaryIO, max_bytes: int
    ) -> tuple[str, int]:
        """Copy ``stream`` into ``target``, hashing it; ``(digest, size)``.

        A body of one chunk is hashed and written in place. A longer one is
        pipelined: this thread reads the next chunk while a writer thread
        hashes and writes the one before. Socket reads, SHA-256 and file
        writes all release the GIL, so on a large upload the three overlap
        instead of taking turns; at most ``PIPELINE_CHUNKS`` chunks are held.
        """
        hasher = hashlib.sha256()
        first = stream.read(CHUNK_BYTES)
        size = _count(len(first), 0, max_bytes)
        hasher.update(first)
        target.write(first)

        chunk = stream.read(CHUNK_BYTES) if first else b""
        if chunk:
            size = _pipelined(stream, chunk, size, max_bytes, hasher, target)

        target.flush()
        os.fsync(target.fileno())
        return f"sha256:{hasher.hexdigest()}", size

    def has_blob(self, tenant: str, digest: str) -> bool:
        return self.blob_path(tenant, digest).is_file()

    def blob_size(self, tenant: str, digest: str) -> int:
        """The stored blob's size, or ``NotFound``."""
        try:
            return self.blob_path(tenant, digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"No blob {normalise_digest(digest)} is stored.")

    # -- records ----------------------------------------------------------

    def publish(
        self,
        tenant: str,
        coordinate: Coordinate,
        digest: str,
        *,
        created_by: str,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        """Write the coordinate's record for a stored blob and return it.

        ``AlreadyExists`` when the coordinate has a record, ``NotFound``
        when no blob has ``digest``. A publish made by a job (``job_id``) is
        idempotent for that job: a job re-run after its worker died finds
        its own record and gets it back instead of a conflict.
        """
        digest = normalise_digest(digest)
        size = self.blob_size(tenant, digest)
        record = {
            **coordinate.to_dict(),
            "digest": digest,
            "size": size,
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "created_by": created_by,
        }
        if job_id is not None:
            record["job_id"] = job_id

        final = self._record_path(tenant, coordinate)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._link_once(
                json.dumps(record, sort_keys=True).encode(), final, coordinate
            )
        except AlreadyExists:
            existing = self.record(tenant, coordinate)
            same_job = job_id is not None and existing.get("job_id") == job_id
            if same_job and existing["digest"] == digest:
                return existing
            raise
        logger.info("Published %s as %s for tenant %s.", coordinate, digest, tenant)
        return record

    def _link_once(self, content: bytes, final: Path, coordinate: Coordinate) -> None:
        descriptor, temporary = tempfile.mkstemp(dir=self.tmp_dir, prefix="record-")
        try:
            with os.fdopen(descriptor, "wb") as target:
                target.write(content)
                target.flush()
                os.fsync(target.fileno())
            os.link(temporary, final)
        except FileExistsError:
            raise AlreadyExists(f"The artifact {coordinate} is already published.")
        finally:
            _remove_quietly(temporary)

        fsync_directory(final.parent)

    def exists(self, tenant: str, coordinate: Coordinate) -> bool:
        return self._record_path(tenant, coordinate).is_file()

    def refuse_existing(self, tenant: str, coordinate: Coordinate) -> None:
        """``AlreadyExists`` when the coordinate is published.

        A cheap early answer before an upload is read; only ``publish``
        decides atomically.
        """
        if self.exists(tenant, coordinate):
            raise AlreadyExists(f"The artifact {coordinate} is already published.")

    def record(self, tenant: str, coordinate: Coordinate) -> dict[str, Any]:
        """The coordinate's metadata record, or ``NotFound``."""
        try:
            raw = self._record_path(tenant, coordinate).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"The artifact {coordinate} does not exist.")
        record: dict[str, Any] = json.loads(raw)
        return record

    def locate_blob(
        self, tenant: str, coordinate: Coordinate
    ) -> tuple[dict[str, Any], Path]:
        """The coordinate's record and the path of its blob, or ``NotFound``."""
        record = self.record(tenant, coordinate)
        path = self.blob_path(tenant, record["digest"])
        if not path.is_file():
            raise NotFound(f"The blob of {coordinate} is missing from storage.")
        return record, path

    # -- packages ---------------------------------------------------------

    @staticmethod
    def _published_versions(package: Path) -> list[str]:
        """The version directories under ``package`` that hold a record."""
        try:
            entries = list(os.scandir(package))
        except FileNotFoundError:
            return []
        return [
            entry.name
            for entry in entries
            if entry.is_dir() and ArtifactStore._variants_in(entry.path)
        ]

    @staticmethod
    def _variants_in(version_dir: str | Path) -> list[str]:
        return sorted(
            entry.name.removesuffix(RECORD_SUFFIX)
            for entry in os.scandir(version_dir)
            if entry.name.endswith(RECORD_SUFFIX)
        )

    def versions(self, tenant: str, namespace: str, name: str) -> list[str]:
        """The package's published versions in ascending SemVer order."""
        package = self._package_dir(tenant, namespace, name)
        return sort_versions(self._published_versions(package))

    def version_list(self, tenant: str, namespace: str, name: str) -> dict[str, Any]:
        """The answer of ``GET /v1/<ns>/<name>/versions`` and ``list_versions``.

        ``NotFound`` when the package has no published version.
        """
        namespace, name = normalise_namespace(namespace), normalise_name(name)
        versions = self.versions(tenant, namespace, name)
        if not versions:
            raise NotFound(f"The package {namespace}/{name} does not exist.")
        return {"namespace": namespace, "name": name, "versions": versions}

    def latest(
        self,
        tenant: str,
        namespace: str,
        name: str,
        *,
        include_prerelease: bool = False,
        variant: str | None = None,
    ) -> dict[str, Any]:
        """The answer of ``GET /v1/<ns>/<name>/latest`` and ``resolve_latest``.

        The highest release, or the highest version of all when
        ``include_prerelease``; with a ``variant``, of the versions that
        have it. ``NotFound`` when nothing qualifies, which includes a
        package with pre-releases only and ``include_prerelease`` false: its
        message says to ask with ``prerelease=true``.
        """
        namespace, name = normalise_namespace(namespace), normalise_name(name)
        package = self._package_dir(tenant, namespace, name)
        versions = self._published_versions(package)
        if not versions:
            raise NotFound(f"The package {namespace}/{name} does not exist.")
        if variant is not None:
            variant = normalise_variant(variant)
            record = variant + RECORD_SUFFIX
            versions = [v for v in versions if (package / v / record).is_file()]
            if not versions:
                raise NotFound(
                    f"The package {namespace}/{name} has no version "
                    f"of variant {variant}."
                )

        chosen = latest_version(versions, include_prerelease=include_prerelease)
        if chosen is None:
            raise NotFound(
                f"The package {namespace}/{name} has pre-releases only; "
                "ask with prerelease=true to get the highest of them."
            )

        return {
            "namespace": namespace,
            "name": name,
            "version": chosen,
            "variants": self._variants_in(package / chosen),
        }

    # -- housekeeping -----------------------------------------------------

    def check(self) -> dict[str, Any]:
        """Whether storage is writable: a probe file written, synced, removed."""
        try:
            with tempfile.NamedTemporaryFile(dir=self.tmp_dir, prefix="probe-") as f:
                f.write(b"probe")
                f.flush()
                os.fsync(f.fileno())
        except OSError as error:
            logger.error("Storage under %s is not writable: %s", self.data_dir, error)
            return {"ok": False, "data_dir": str(self.data_dir), "error": str(error)}
        return {"ok": True, "data_dir": str(self.data_dir)}

    def remove_stale_temporaries(self, older_than_seconds: float = 3600) -> int:
        """Delete temporary files a crash left behind; returns how many."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                _remove_quietly(entry.path)
                removed += 1
        if removed:
            logger.info("Removed %d stale temporary file(s) from storage.", removed)
        return removed
