"""Signed webhook deliveries and the guard on where they may go.

A delivery POSTs the final job as JSON with the header
``X-PackageRepo-Signature: t=<unix time>,v1=<hex HMAC-SHA256>``, computed
over ``"<t>." + body`` with the tenant's signing secret. Receivers recompute
it and reject old timestamps. The secret per tenant is derived from
``WEBHOOK_SECRET`` (or the JWT secret when that is unset), so rotating the
root secret rotates every tenant's.

Destinations pass an SSRF guard: http(s) only, no credentials in the URL,
and every address the host resolves to must be public, unless the host is
on ``WEBHOOK_ALLOWLIST``; loopback is allowed only with
``WEBHOOK_ALLOW_LOOPBACK``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from packagerepo.accounts import jwt_secret
from packagerepo.config import Settings
from packagerepo.errors import InvalidRequest

SIGNATURE_HEADER = "X-PackageRepo-Signature"
TIMEOUT_SECONDS = 5.0


def tenant_secret(settings: Settings, tenant: str) -> str:
    root = settings.webhook_secret or jwt_secret(settings)
    return hmac.new(root.encode(), f"webhook:{tenant}".encode(), "sha256").hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def check_destination(url: str, settings: Settings) -> str:
    """The URL when a webhook may be sent there, else InvalidRequest."""
    if not isinstance(url, str) or len(url) > 2048:
        raise InvalidRequest("X-Callback-Url must be a URL of at most 2048 characters.")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidRequest("X-Callback-Url is not a well-formed URL.")
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidRequest("X-Callback-Url must be an http or https URL.")
    if parts.username or parts.password:
        raise InvalidRequest("X-Callback-Url must not carry credentials.")

    host = parts.hostname.lower()
    if host in settings.webhook_allowlist:
        return url
    for address in _addresses(host, port):
        if address.is_loopback and settings.webhook_allow_loopback:
            continue
        if not address.is_global:
            raise InvalidRequest("X-Callback-Url points at a non-public address.")
    return url


def _addresses(
    host: str, port: int
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise InvalidRequest("X-Callback-Url names a host that does not resolve.")
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def deliver(url: str, job: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """POST the job once; returns the attempt as recorded on the job."""
    check_destination(url, settings)
    body = json.dumps({"job": job}).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(
            tenant_secret(settings, job["tenant"]), timestamp, body
        ),
        "User-Agent": "PackageRepo-Webhook/1",
    }
    attempt: dict[str, Any] = {"at": timestamp, "url": url}
    try:
        response = requests.post(
            url,
            data=body,
            headers=headers,
            timeout=TIMEOUT_SECONDS,
            allow_redirects=False,
        )
        attempt["status"] = response.status_code
        attempt["ok"] = 200 <= response.status_code < 300
    except requests.RequestException as error:
        attempt["ok"] = False
        attempt["error"] = type(error).__name__
    return attempt
