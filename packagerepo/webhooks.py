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

import concurrent.futures
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3

from packagerepo.accounts import jwt_secret
from packagerepo.config import Settings
from packagerepo.errors import InvalidRequest
from packagerepo.jobs import now_iso

SIGNATURE_HEADER = "X-PackageRepo-Signature"
TIMEOUT_SECONDS = 5.0


def tenant_secret(settings: Settings, tenant: str) -> str:
    root = settings.webhook_secret or jwt_secret(settings)
    return hmac.new(root.encode(), f"webhook:{tenant}".encode(), "sha256").hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass(frozen=True)
class Destination:
    """A callback URL that passed the guard, and the address it was checked at."""

    url: str
    scheme: str
    host: str
    port: int
    target: str
    """Path and query, as sent in the request line."""
    address: str | None
    """The checked IP to connect to; None for an allow-listed host."""

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def check_destination(url: str, settings: Settings) -> Destination:
    """Where a webhook for ``url`` may go, else InvalidRequest.

    Every address the host resolves to must pass; delivery then connects to
    the checked address itself, so a second lookup cannot point elsewhere
    (DNS rebinding).
    """
    if not isinstance(url, str) or len(url) > 2048:
        raise InvalidRequest("X-Callback-Url must be a URL of at most 2048 characters.")
    try:
        parts = urlsplit(url)
        default = 443 if parts.scheme == "https" else 80
        port = default if parts.port is None else parts.port
    except ValueError:
        raise InvalidRequest("X-Callback-Url is not a well-formed URL.")
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidRequest("X-Callback-Url must be an http or https URL.")
    if parts.username or parts.password:
        raise InvalidRequest("X-Callback-Url must not carry credentials.")
    if port == 0:
        raise InvalidRequest("X-Callback-Url's port must not be 0.")

    host = parts.hostname.lower()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if host in settings.webhook_allowlist:
        return Destination(url, parts.scheme, host, port, target, None)
    addresses = _addresses(host, port)
    for address in addresses:
        embedded = _embedded_ipv4(address)
        checked = embedded or address
        if checked.is_loopback and settings.webhook_allow_loopback:
            continue
        never_public = any(address in network for network in NEVER_PUBLIC)
        if (
            never_public
            or checked.is_multicast
            or not checked.is_global
            or (embedded and not address.is_global)
        ):
            raise InvalidRequest("X-Callback-Url points at a non-public address.")
    return Destination(url, parts.scheme, host, port, target, str(addresses[0]))


NAT64 = ipaddress.ip_network("64:ff9b::/96")
SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
"""IPv4-translated addresses (RFC 6145): the IPv4 one is the last 32 bits."""
NEVER_PUBLIC = (
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
    ipaddress.ip_network("fec0::/10"),  # site-local, deprecated (RFC 3879)
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments (RFC 6890)
)
"""Ranges Python counts as global that only ever reach a private network."""


def _embedded_ipv4(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64 or the
    deprecated compatible form), which is what a connection reaches."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    # ::1 and :: are IPv6's own loopback and unspecified addresses.
    if (
        address in NAT64
        or address in SIIT
        or (int(address) >> 32 == 0 and int(address) > 1)
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


RESOLVE_SECONDS = 3.0
"""How long a callback host may take to resolve before it is refused."""
RESOLVER_THREADS = 4
_resolver: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None


def _resolver_pool() -> concurrent.futures.ThreadPoolExecutor:
    """This process's few lookup threads (made after a fork, not before:
    a forked pool's threads do not exist in the child)."""
    global _resolver
    if _resolver is None or _resolver[0] != os.getpid():
        pool = concurrent.futures.ThreadPoolExecutor(
            RESOLVER_THREADS, thread_name_prefix="resolve"
        )
        _resolver = (os.getpid(), pool)
    return _resolver[1]


def _addresses(
    host: str, port: int
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The host's addresses, looked up on a lookup thread: a name whose DNS
    server never answers costs a lookup thread, never the caller's (an API
    request's) for the resolver's whole timeout."""
    lookup = _resolver_pool().submit(
        socket.getaddrinfo, host, port, proto=socket.IPPROTO_TCP
    )
    try:
        infos = lookup.result(timeout=RESOLVE_SECONDS)
    except concurrent.futures.TimeoutError:
        lookup.cancel()
        raise InvalidRequest(
            f"X-Callback-Url names a host that did not resolve within "
            f"{RESOLVE_SECONDS:g} s."
        )
    except (socket.gaierror, UnicodeError):
        raise InvalidRequest("X-Callback-Url names a host that does not resolve.")
    if not infos:
        raise InvalidRequest("X-Callback-Url names a host that does not resolve.")
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def deliver(url: str, job: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """POST the job once; returns the attempt as recorded on the job.

    Only the status line and headers of the answer are read: a receiver's
    body, however large or slow, is never waited for.
    """
    destination = check_destination(url, settings)
    body = json.dumps({"job": job}).encode()
    timestamp = int(time.time())
    headers = {
        "Host": destination.host_header,
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(
            tenant_secret(settings, job["tenant"]), timestamp, body
        ),
        "User-Agent": "PackageRepo-Webhook/1",
    }
    attempt: dict[str, Any] = {"at": now_iso(), "url": url}
    try:
        with _connection_pool(destination) as pool:
            response = pool.urlopen(
                "POST",
                destination.target,
                body=body,
                headers=headers,
                redirect=False,
                retries=False,
                preload_content=False,
            )
            response.close()
        attempt["status"] = response.status
        attempt["ok"] = 200 <= response.status < 300
    except urllib3.exceptions.HTTPError as error:
        attempt["ok"] = False
        attempt["error"] = type(error).__name__
    return attempt


def _connection_pool(destination: Destination) -> urllib3.HTTPConnectionPool:
    """A pool connected to the checked address; TLS still verifies the name."""
    timeout = urllib3.Timeout(connect=TIMEOUT_SECONDS, read=TIMEOUT_SECONDS)
    address = destination.address or destination.host
    if destination.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            destination.port,
            timeout=timeout,
            server_hostname=destination.host,
            assert_hostname=destination.host,
            maxsize=1,
        )
    return urllib3.HTTPConnectionPool(
        address, destination.port, timeout=timeout, maxsize=1
    )
