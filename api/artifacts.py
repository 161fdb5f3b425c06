"""The direct artifact endpoints: publish, download, latest and versions.

Every operation is one call into ``repository.storage.ArtifactStore``, the
same call the workflow nodes make, so the endpoints and the bundled
workflows answer alike.

Uploads never go through ``request.data``: the body is read from the WSGI
input in 1 MiB chunks straight into a temporary file, so memory stays flat
whatever the size. Flask's ``MAX_CONTENT_LENGTH`` guards JSON bodies only;
this route enforces ``MAX_UPLOAD_BYTES`` itself, on ``Content-Length`` up
front and while streaming (which covers chunked bodies).

Reads need the ``read`` scope. With ``ALLOW_ANON_READ`` a caller without a
token may read too; such a caller reads the tenant named in ``X-Tenant-ID``,
or ``default``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, send_file
from werkzeug.exceptions import (
    NotFound,
    PreconditionFailed,
    RequestedRangeNotSatisfiable,
)
from werkzeug.http import parse_range_header, parse_set_header
from werkzeug.routing import RequestRedirect
from werkzeug.wsgi import get_input_stream

from api.auth import check_scope, require_scope, resolve_identity
from packagerepo.accounts import Identity
from packagerepo.errors import (
    BlobTooLarge,
    CoordinateInvalid,
    DigestMismatch,
    InvalidRequest,
)
from packagerepo.services import Services
from packagerepo.tenants import check_tenant
from repository.coordinates import Coordinate
from repository.storage import ByteSource, normalise_digest

log = logging.getLogger(__name__)

artifacts_bp = Blueprint("artifacts", __name__)

BLOB_ROUTE = "/v1/<namespace>/<name>/<version>/<variant>/blob"
ANONYMOUS_TENANT = "default"
ARTIFACT_SUFFIXES = ("/blob", "/latest", "/versions")
CONTENT_DIGEST_VALUE = re.compile(r":([A-Za-z0-9+/=]+):")


def _services() -> Services:
    from api import services

    return services()


def _reader() -> Identity | None:
    """The caller of a read route; anonymous only when ALLOW_ANON_READ is on."""
    anonymous_allowed = _services().settings.allow_anon_read
    identity = resolve_identity(required=not anonymous_allowed)
    if identity is not None or not anonymous_allowed:
        check_scope(identity, "read")
    return identity


def _reader_tenant() -> str:
    identity = _reader()
    if identity is not None:
        return identity.tenant
    return check_tenant(request.headers.get("X-Tenant-ID", ANONYMOUS_TENANT))


def declared_digest(headers: Any) -> str | None:
    """The digest a client declared in ``Content-Digest`` or ``X-Checksum-Sha256``.

    ``Content-Digest`` follows RFC 9530 (``sha-256=:<base64>:``); other
    algorithms in it are ignored. Two declarations that disagree are refused.
    """
    declared = set()
    checksum = headers.get("X-Checksum-Sha256")
    if checksum:
        declared.add(normalise_digest(checksum))

    for algorithm, value in _content_digest_entries(headers.get("Content-Digest", "")):
        if algorithm != "sha-256":
            continue
        match = CONTENT_DIGEST_VALUE.fullmatch(value)
        try:
            raw = base64.b64decode(match.group(1) if match else "!", validate=True)
        except binascii.Error:
            raise InvalidRequest("Content-Digest's sha-256 is not :<base64>:.")
        if len(raw) != 32:
            raise InvalidRequest("Content-Digest's sha-256 must be 32 bytes.")
        declared.add(f"sha256:{raw.hex()}")

    if len(declared) > 1:
        raise DigestMismatch("Content-Digest and X-Checksum-Sha256 disagree.")
    return declared.pop() if declared else None


def _content_digest_entries(header: str) -> list[tuple[str, str]]:
    """``(algorithm, value)`` pairs of an RFC 9530 Content-Digest header."""
    entries = []
    for item in header.split(","):
        algorithm, _, value = item.strip().partition("=")
        if algorithm:
            entries.append((algorithm.strip().lower(), value.strip()))
    return entries


class _ExactLength:
    """Reads a body and refuses one that ends before its Content-Length.

    A client that disconnects mid-upload must not get the part it sent
    published as the artifact.
    """

    def __init__(self, stream: ByteSource, length: int | None) -> None:
        self._stream = stream
        self._remaining = length

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        if self._remaining is None:
            return chunk
        if not chunk and self._remaining > 0 and size != 0:
            raise InvalidRequest("The body ended before its Content-Length.")
        self._remaining -= len(chunk)
        return chunk


def _is_chunked_and_terminated() -> bool:
    """Whether a body without Content-Length is chunked and can be read whole.

    Decided from the headers: gunicorn sets ``wsgi.input_terminated`` on
    every request, so on its own it would take a body with no framing at
    all (an empty one) for a complete upload. A server that does not set it
    cannot hand on a chunked body.
    """
    encodings = parse_set_header(request.headers.get("Transfer-Encoding"))
    terminated = bool(request.environ.get("wsgi.input_terminated"))
    return "chunked" in encodings and terminated


def _upload_stream(max_bytes: int) -> _ExactLength:
    """The request body as a stream, refusing what is certainly too large."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BlobTooLarge(f"The blob is larger than {max_bytes} bytes.")
    if length is None and not _is_chunked_and_terminated():
        raise InvalidRequest(
            "A Content-Length or a chunked body is required.",
            code="LENGTH_REQUIRED",
            status=411,
        )

    # Flask's own limit is for JSON bodies; this route counts bytes itself.
    # NOTE: under gunicorn the body arrives through its pure-Python reader
    # in small socket reads, which caps uploads near 150-200 MiB/s on the
    # benchmark machine (bench/bench_artifacts.py); serving uploads from a
    # server with a C body reader, or a reverse proxy that buffers to disk,
    # would lift it.
    stream = get_input_stream(request.environ, max_content_length=None)
    return _ExactLength(stream, length)


@artifacts_bp.route(BLOB_ROUTE, methods=["PUT", "POST"])
@require_scope("write")
def publish_blob(namespace: str, name: str, version: str, variant: str) -> Response:
    services = _services()
    identity: Identity = g.identity
    coordinate = Coordinate.parse(namespace, name, version, variant)
    expected = declared_digest(request.headers)
    store = services.artifacts

    # Refused before the body is read; the atomic refusal is in publish().
    store.refuse_existing(identity.tenant, coordinate)

    max_bytes = services.settings.max_upload_bytes
    digest, _ = store.put_blob(
        identity.tenant,
        _upload_stream(max_bytes),
        declared_digest=expected,
        max_bytes=max_bytes,
    )
    record = store.publish(
        identity.tenant, coordinate, digest, created_by=identity.username
    )

    response = jsonify({"ok": True, **record, "download_url": coordinate.download_url})
    response.status_code = 201
    response.headers["Location"] = coordinate.download_url
    return response


@artifacts_bp.get(BLOB_ROUTE)
def download_blob(namespace: str, name: str, version: str, variant: str) -> Response:
    tenant = _reader_tenant()
    coordinate = Coordinate.parse(namespace, name, version, variant)
    record, path = _services().artifacts.locate_blob(tenant, coordinate)
    _refuse_failed_if_match(record["digest"])

    response = send_file(
        path,
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"{coordinate.name}-{coordinate.version}-{coordinate.variant}",
        conditional=False,
        etag=record["digest"],
        max_age=None,
    )
    _make_conditional(response)
    hex_digest = record["digest"].removeprefix("sha256:")
    response.headers["X-Checksum-Sha256"] = hex_digest
    encoded = base64.b64encode(bytes.fromhex(hex_digest)).decode()
    # RFC 9530: Repr-Digest is the whole blob's; Content-Digest is of the
    # bytes sent, which are the whole blob only in a 200.
    response.headers["Repr-Digest"] = f"sha-256=:{encoded}:"
    if response.status_code == 200:
        response.headers["Content-Digest"] = f"sha-256=:{encoded}:"
    return response


def _refuse_failed_if_match(digest: str) -> None:
    """412 unless If-Match names this blob (strongly) or is ``*``.

    Decided here, before the file is opened, because werkzeug gets If-Match
    wrong: it answers 412 with the whole blob as the body, refuses ``*``,
    lets a satisfiable Range win over it and lets If-None-Match overrule it.
    """
    wanted = request.if_match
    if wanted and not wanted.contains(digest):
        raise PreconditionFailed("If-Match names no current version of this blob.")


def _make_conditional(response: Response) -> None:
    """Range and If-None-Match for ``response``; If-Match was decided before.

    werkzeug does the work; what it gets wrong by RFC 9110 is settled first:
    a current ETag in If-None-Match is 304 whatever the Range (13.2.2); a
    Range that is not one (another unit, malformed, backwards) is ignored
    rather than refused; a suffix longer than the blob is the whole blob
    (14.1.2); and several ranges at once (``bytes=0-0,5-9``) are ignored and
    the whole blob sent, as the RFC allows (werkzeug serves one range only).
    """
    environ = {
        key: value
        for key, value in request.environ.items()
        if key not in ("HTTP_IF_MATCH", "HTTP_RANGE")
    }
    length = response.content_length or 0
    current, _weak = response.get_etag()
    try:
        wanted = _wanted_range(request.headers.get("Range"), length, current or "")
        if wanted is not None:
            environ["HTTP_RANGE"] = wanted
        response.make_conditional(
            environ, accept_ranges=True, complete_length=response.content_length
        )
    except RequestedRangeNotSatisfiable:
        response.close()
        raise


def _wanted_range(header: str | None, length: int, etag: str) -> str | None:
    """The Range to serve, if any; RequestedRangeNotSatisfiable for a zero
    suffix (``bytes=-0``), which can select nothing."""
    not_modified = request.if_none_match.contains_weak(etag)
    if not header or not_modified or "," in header:
        return None
    if re.fullmatch(r"\s*bytes\s*=\s*-0+\s*", header):
        raise RequestedRangeNotSatisfiable(length=length)
    parsed = parse_range_header(header)
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return None
    start, _end = parsed.ranges[0]
    if start < 0 and -start > length:
        return "bytes=0-"
    return header


@artifacts_bp.get("/v1/<namespace>/<name>/latest")
def latest(namespace: str, name: str) -> Response:
    answer = _services().artifacts.latest(
        _reader_tenant(),
        namespace,
        name,
        include_prerelease=_flag(request.args.get("prerelease")),
        variant=request.args.get("variant"),
    )
    return jsonify({"ok": True, **answer})


@artifacts_bp.get("/v1/<namespace>/<name>/versions")
def versions(namespace: str, name: str) -> Response:
    answer = _services().artifacts.version_list(_reader_tenant(), namespace, name)
    return jsonify({"ok": True, **answer})


@artifacts_bp.before_app_request
def refuse_malformed_coordinates() -> None:
    """Artifact paths with extra or encoded slashes are validation errors.

    The routes above match single segments, so ``/v1/acme/..%2f..%2fetc/...``
    matches none of them; without this hook it would be a plain 404, which
    hides that the path itself was refused. An empty segment (``%2F`` at the
    start of one) would otherwise be redirected to a merged path.
    """
    if not isinstance(request.routing_exception, NotFound | RequestRedirect):
        return
    path = request.path
    if path.startswith("/v1/") and path.endswith(ARTIFACT_SUFFIXES):
        raise CoordinateInvalid("An artifact path has exactly the documented segments.")


def _flag(raw: str | None) -> bool:
    return (raw or "").strip().lower() in {"1", "true", "yes", "on"}
