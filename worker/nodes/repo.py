"""Repository node types (``repo.*``): thin calls into ``ArtifactStore``.

Each node reads its coordinate from parameters (usually expressions such as
``{{ $json.namespace }}``), calls the same ``ArtifactStore`` method as the
direct endpoint for that operation and emits the same dictionary that
endpoint answers with, minus ``ok``. Errors are the store's own
(``VALIDATION_ERROR`` 400, ``NOT_FOUND`` 404, ``ALREADY_EXISTS`` 409,
``BLOB_TOO_LARGE`` 413, ``DIGEST_MISMATCH`` 400), raised unchanged so the
engine routes them to the node's error output.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from typing import Any

from packagerepo.errors import BlobTooLarge, InvalidRequest
from repository.coordinates import (
    Coordinate,
    normalise_name,
    normalise_namespace,
    normalise_variant,
    normalise_version,
)
from worker.nodes.base import NodeCall, Outputs, implements

log = logging.getLogger(__name__)

COORDINATE_PARAMETERS = ("namespace", "package", "version", "variant")
"""A coordinate's parameters; ``name`` is a node attribute, hence ``package``."""


def _coordinate(call: NodeCall) -> Coordinate:
    return Coordinate.parse(*(call.param(part) for part in COORDINATE_PARAMETERS))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _emit(item: dict[str, Any]) -> Outputs:
    return Outputs.single([item])


# Pure parsing of its parameters: no thread hand-off needed.
@implements("repo.parse_coordinate", inline=True)
def parse_coordinate(call: NodeCall) -> Outputs:
    """The normalised coordinate; version and variant only when given."""
    item = {
        "namespace": normalise_namespace(call.param("namespace")),
        "name": normalise_name(call.param("package")),
    }
    version, variant = call.param("version"), call.param("variant")
    if version is not None:
        item["version"] = normalise_version(version)
    if variant is not None:
        item["variant"] = normalise_variant(variant)
    return _emit(item)


@implements("repo.list_versions")
def list_versions(call: NodeCall) -> Outputs:
    store = call.services.artifacts
    return _emit(
        store.version_list(
            call.execution.tenant, call.param("namespace"), call.param("package")
        )
    )


@implements("repo.resolve_latest")
def resolve_latest(call: NodeCall) -> Outputs:
    store = call.services.artifacts
    return _emit(
        store.latest(
            call.execution.tenant,
            call.param("namespace"),
            call.param("package"),
            include_prerelease=_flag(call.param("prerelease", False)),
            variant=call.param("variant", None),
        )
    )


@implements("repo.read_metadata")
def read_metadata(call: NodeCall) -> Outputs:
    store = call.services.artifacts
    return _emit(store.record(call.execution.tenant, _coordinate(call)))


@implements("repo.locate_blob")
def locate_blob(call: NodeCall) -> Outputs:
    """The record of an artifact whose blob is present, with its download URL."""
    coordinate = _coordinate(call)
    record, _path = call.services.artifacts.locate_blob(
        call.execution.tenant, coordinate
    )
    return _emit({**record, "download_url": coordinate.download_url})


@implements("repo.put_blob")
def put_blob(call: NodeCall) -> Outputs:
    """Store base64 content; the input item gains ``digest`` and ``size``."""
    limit = call.services.settings.max_upload_bytes
    asked = call.param("maxBytes")
    if asked is not None:
        limit = min(limit, _positive_int(asked))

    content = _decode_base64(call.param("content_base64"), limit)
    digest, size = call.services.artifacts.put_blob(
        call.execution.tenant,
        io.BytesIO(content),
        declared_digest=call.param("digest") or None,
        max_bytes=limit,
    )
    return _emit({**call.first_item, "digest": digest, "size": size})


def _positive_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise InvalidRequest("maxBytes must be a positive whole number.")
    return number


def _decode_base64(text: Any, limit: int) -> bytes:
    """The bytes of ``text``, refusing oversize input before decoding it."""
    if not isinstance(text, str) or not text:
        raise InvalidRequest("content_base64 must be a non-empty base64 string.")
    if len(text) // 4 * 3 > limit + 2:
        raise BlobTooLarge(f"The blob is larger than {limit} bytes.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("content_base64 is not valid base64.")


@implements("repo.publish")
def publish(call: NodeCall) -> Outputs:
    """Write the record for a stored digest; emits the record.

    ``created_by`` is the user who submitted the job, as the direct endpoint
    records the uploader.
    """
    record = call.services.artifacts.publish(
        call.execution.tenant,
        _coordinate(call),
        call.param("digest"),
        created_by=call.execution.user or f"job:{call.execution.job_id}",
        job_id=call.execution.job_id,
    )
    return _emit(record)
