"""The direct artifact endpoints through Flask's test client."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import pytest

from .conftest import TENANT, tree_snapshot

BLOB = "/v1/acme/tool/{version}/default/blob"


def a_wheel() -> Path:
    """A real package file from the test environment: a wheel ensurepip bundles."""
    import ensurepip

    wheels = (Path(ensurepip.__file__).parent / "_bundled").glob("*.whl")
    smallest = sorted(wheels, key=lambda path: path.stat().st_size)
    if not smallest:
        pytest.skip("This Python ships no bundled wheels to publish.")
    return smallest[0]


def fetch(client, path: str, headers: dict | None = None):
    """GET ``path``, read the whole body and close the streamed file."""
    response = client.get(path, headers=headers)
    response.get_data()
    response.close()
    return response


def upload(client, version: str, content: bytes, headers: dict, **extra):
    return client.put(
        BLOB.format(version=version),
        data=content,
        headers=headers,
        content_type="application/octet-stream",
        **extra,
    )


def test_a_real_package_file_publishes_and_downloads_byte_identical(api, token):
    content = a_wheel().read_bytes()
    digest = "sha256:" + hashlib.sha256(content).hexdigest()

    published = upload(api, "1.0.0", content, token())
    downloaded = fetch(api, BLOB.format(version="1.0.0"), headers=token())

    assert published.status_code == 201
    assert published.json["ok"] is True
    assert published.json["digest"] == digest
    assert published.json["size"] == len(content)
    assert published.headers["Location"] == BLOB.format(version="1.0.0")
    assert downloaded.status_code == 200
    assert downloaded.data == content
    assert downloaded.headers["Content-Length"] == str(len(content))
    assert downloaded.headers["ETag"] == f'"{digest}"'


def test_post_publishes_like_put(api, token):
    response = api.post(BLOB.format(version="2.0.0"), data=b"x", headers=token())

    assert response.status_code == 201


def test_a_download_with_the_current_etag_is_not_modified(api, token):
    upload(api, "1.0.0", b"content", token())
    etag = fetch(api, BLOB.format(version="1.0.0"), headers=token()).headers["ETag"]

    again = fetch(
        api, BLOB.format(version="1.0.0"), headers={**token(), "If-None-Match": etag}
    )

    assert again.status_code == 304
    assert again.data == b""


def test_publishing_an_existing_coordinate_is_a_conflict(api, token):
    upload(api, "1.0.0", b"first", token())

    response = upload(api, "1.0.0", b"second", token())

    assert response.status_code == 409
    assert response.json["error"]["code"] == "ALREADY_EXISTS"
    assert fetch(api, BLOB.format(version="1.0.0"), headers=token()).data == b"first"


@pytest.mark.parametrize("header", ["X-Checksum-Sha256", "Content-Digest"])
def test_a_declared_digest_is_verified(api, token, data_dir, header):
    wrong = hashlib.sha256(b"something else").digest()
    value = wrong.hex()
    if header == "Content-Digest":
        value = f"sha-256=:{base64.b64encode(wrong).decode()}:"
    before = tree_snapshot(data_dir)

    response = upload(api, "1.0.0", b"payload", {**token(), header: value})

    assert response.status_code == 400
    assert response.json["error"]["code"] == "DIGEST_MISMATCH"
    assert tree_snapshot(data_dir) == before


def test_a_matching_content_digest_is_accepted(api, token):
    encoded = base64.b64encode(hashlib.sha256(b"payload").digest()).decode()
    headers = {**token(), "Content-Digest": f"sha-256=:{encoded}:"}

    assert upload(api, "1.0.0", b"payload", headers).status_code == 201


def test_a_body_over_the_limit_is_refused_and_leaves_nothing(api, token, data_dir):
    before = tree_snapshot(data_dir)

    response = upload(api, "1.0.0", b"x" * (8 * 1024 * 1024 + 1), token())

    assert response.status_code == 413
    assert response.json["error"]["code"] == "BLOB_TOO_LARGE"
    assert tree_snapshot(data_dir) == before


def test_a_chunked_body_over_the_limit_is_refused_while_streaming(api, token, data_dir):
    before = tree_snapshot(data_dir)

    response = api.put(
        BLOB.format(version="1.0.0"),
        input_stream=io.BytesIO(b"x" * (8 * 1024 * 1024 + 1)),
        headers={**token(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 413
    assert response.json["error"]["code"] == "BLOB_TOO_LARGE"
    assert tree_snapshot(data_dir) == before


def test_a_chunked_body_within_the_limit_is_stored(api, token):
    response = api.put(
        BLOB.format(version="1.0.0"),
        input_stream=io.BytesIO(b"chunked content"),
        headers={**token(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 201
    assert response.json["size"] == len(b"chunked content")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/acme/%2e%2e/1.0.0/default/blob",
        "/v1/%2e%2e/tool/1.0.0/default/blob",
        "/v1/acme/tool/1.0.0/%2e%2e/blob",
        "/v1/acme/..%2f..%2f..%2fetc/1.0.0/default/blob",
        "/v1/acme/tool/..%2f..%2f1.0.0/default/blob",
        "/v1/acme/tool/../../../../etc/blob",
        "/v1/acme/tool%00/1.0.0/default/blob",
        "/v1/acme/..%5c..%5cwindows/1.0.0/default/blob",
        "/v1/acme/%E2%80%A4%E2%80%A4/1.0.0/default/blob",
        "/v1/acme/%EF%BC%8E%EF%BC%8E/1.0.0/default/blob",
        "/v1/%2Fetc/tool/1.0.0/default/blob",
        "/v1/acme/" + "x" * 300 + "/1.0.0/default/blob",
        "/v1/acme/tool/v1/default/blob",
    ],
)
def test_traversal_attempts_are_validation_errors_and_change_nothing(
    api, token, data_dir, path
):
    outside = data_dir.parent
    before = tree_snapshot(outside)

    put = api.put(path, data=b"evil", headers=token())
    get = fetch(api, path, headers=token())

    assert (put.status_code, get.status_code) == (400, 400)
    assert put.json["error"]["code"] == "VALIDATION_ERROR"
    assert tree_snapshot(outside) == before


@pytest.mark.parametrize(
    "path", ["/v1/%2e%2e/tool/latest", "/v1/acme/..%2f..%2fx/versions"]
)
def test_traversal_in_package_routes_is_a_validation_error(api, token, path):
    assert fetch(api, path, headers=token()).status_code == 400


def test_versions_and_latest_follow_semver(api, token):
    for version in ["1.9.0", "1.10.0", "1.10.0-rc.1"]:
        upload(api, version, version.encode(), token())

    versions = fetch(api, "/v1/acme/tool/versions", headers=token())
    latest = fetch(api, "/v1/acme/tool/latest", headers=token())
    with_pre = fetch(api, "/v1/acme/tool/latest?prerelease=true", headers=token())

    assert versions.json == {
        "ok": True,
        "namespace": "acme",
        "name": "tool",
        "versions": ["1.9.0", "1.10.0-rc.1", "1.10.0"],
    }
    assert latest.json["version"] == "1.10.0"
    assert with_pre.json["version"] == "1.10.0"


def test_latest_of_prereleases_only_is_not_found_unless_asked_for(api, token):
    upload(api, "2.0.0-rc.1", b"a", token())

    plain = fetch(api, "/v1/acme/tool/latest", headers=token())
    asked = fetch(api, "/v1/acme/tool/latest?prerelease=true", headers=token())

    assert plain.status_code == 404
    assert plain.json["error"]["code"] == "NOT_FOUND"
    assert asked.json["version"] == "2.0.0-rc.1"


def test_latest_takes_a_variant(api, token):
    upload(api, "1.0.0", b"a", token())
    api.put(
        "/v1/acme/tool/2.0.0/other/blob",
        data=b"b",
        headers=token(),
        content_type="application/octet-stream",
    )

    plain = fetch(api, "/v1/acme/tool/latest", headers=token())
    of_default = fetch(api, "/v1/acme/tool/latest?variant=default", headers=token())
    of_none = fetch(api, "/v1/acme/tool/latest?variant=nowhere", headers=token())
    hostile = fetch(api, "/v1/acme/tool/latest?variant=../x", headers=token())

    assert plain.json["version"] == "2.0.0"
    assert of_default.json["version"] == "1.0.0"
    assert (of_none.status_code, of_none.json["error"]["code"]) == (404, "NOT_FOUND")
    assert (hostile.status_code, hostile.json["error"]["code"]) == (
        400,
        "VALIDATION_ERROR",
    )


def test_names_are_normalised_in_urls(api, token):
    upload(api, "1.0.0", b"x", token())

    response = fetch(api, "/v1/ACME/Tool/versions", headers=token())

    assert response.json["versions"] == ["1.0.0"]


def test_publishing_needs_the_write_scope(api, token):
    response = upload(api, "1.0.0", b"x", token(TENANT, "read"))

    assert response.status_code == 403
    assert response.json["error"]["code"] == "FORBIDDEN"


def test_reading_needs_a_token_unless_anonymous_reads_are_allowed(
    api, token, anonymous_app
):
    upload(api, "1.0.0", b"x", token("default"))

    assert fetch(api, "/v1/acme/tool/versions").status_code == 401
    anonymous = anonymous_app.test_client()
    assert fetch(anonymous, "/v1/acme/tool/versions").json["versions"] == ["1.0.0"]
    assert fetch(anonymous, BLOB.format(version="1.0.0")).data == b"x"
    assert anonymous.put(BLOB.format(version="2.0.0"), data=b"y").status_code == 401


def test_a_tenant_cannot_read_list_or_overwrite_another_tenants_artifacts(api, token):
    alpha, beta = token("alpha"), token("beta")
    upload(api, "1.0.0", b"alpha's", alpha)

    assert fetch(api, BLOB.format(version="1.0.0"), headers=beta).status_code == 404
    assert fetch(api, "/v1/acme/tool/versions", headers=beta).status_code == 404
    assert fetch(api, "/v1/acme/tool/latest", headers=beta).status_code == 404
    assert upload(api, "1.0.0", b"beta's", beta).status_code == 201
    assert fetch(api, BLOB.format(version="1.0.0"), headers=alpha).data == b"alpha's"


def test_a_tenant_header_for_another_tenant_is_refused(api, token):
    headers = {**token("alpha"), "X-Tenant-ID": "beta"}

    response = fetch(api, "/v1/acme/tool/versions", headers=headers)

    assert response.status_code == 403
    assert response.json["error"]["code"] == "TENANT_MISMATCH"


def test_a_missing_artifact_is_not_found(api, token):
    response = fetch(api, BLOB.format(version="9.9.9"), headers=token())

    assert response.status_code == 404
    assert response.json["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("extra", "status", "body"),
    [
        # Found by an adversarial pass. RFC 9110 13.2.2: If-None-Match is
        # evaluated before Range, so a current ETag is 304 whatever the range.
        ({"If-None-Match": "{etag}", "Range": "bytes=0-1"}, 304, b""),
        # A Range that is not one (another unit, empty, backwards) is ignored.
        ({"Range": "items=0-1"}, 200, b"0123456789"),
        ({"Range": "bytes="}, 200, b"0123456789"),
        ({"Range": "bytes=5-2"}, 200, b"0123456789"),
        # A suffix longer than the blob is the whole blob (RFC 9110 14.1.2).
        ({"Range": "bytes=-200001"}, 206, b"0123456789"),
        ({"Range": "bytes=-3"}, 206, b"789"),
        ({"Range": "bytes=2-4"}, 206, b"234"),
        ({"Range": "bytes=-0"}, 416, None),
        ({"Range": "bytes=20-"}, 416, None),
    ],
)
def test_ranges_and_conditions_follow_rfc_9110(api, token, extra, status, body):
    upload(api, "1.0.0", b"0123456789", token())
    etag = fetch(api, BLOB.format(version="1.0.0"), headers=token()).headers["ETag"]
    headers = {name: value.format(etag=etag) for name, value in extra.items()}

    answer = fetch(api, BLOB.format(version="1.0.0"), headers={**token(), **headers})

    assert answer.status_code == status
    if body is not None:
        assert answer.data == body


def test_a_partial_answer_carries_the_whole_blobs_digest_as_repr_digest(api, token):
    """Found by a fresh user: a 206 said Content-Digest with the whole blob's
    digest, but RFC 9530's Content-Digest is of the bytes sent; the whole
    representation's is Repr-Digest."""
    content = b"0123456789"
    encoded = base64.b64encode(hashlib.sha256(content).digest()).decode()
    upload(api, "1.0.0", content, token())

    whole = fetch(api, BLOB.format(version="1.0.0"), headers=token())
    part = fetch(
        api, BLOB.format(version="1.0.0"), headers={**token(), "Range": "bytes=2-4"}
    )

    assert whole.headers["Content-Digest"] == f"sha-256=:{encoded}:"
    assert whole.headers["Repr-Digest"] == f"sha-256=:{encoded}:"
    assert part.status_code == 206
    assert "Content-Digest" not in part.headers
    assert part.headers["Repr-Digest"] == f"sha-256=:{encoded}:"
