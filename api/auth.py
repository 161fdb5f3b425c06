"""Login, the caller's identity, and the scope check every route uses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from packagerepo.accounts import Identity
from packagerepo.errors import Forbidden, TenantMismatch, Unauthorized
from packagerepo.services import Services

auth_bp = Blueprint("auth", __name__)


def _services() -> Services:
    from api import services

    return services()


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def resolve_identity(*, required: bool = True) -> Identity | None:
    """The caller from the bearer token, with X-Tenant-ID applied.

    An admin may act in another tenant by naming it in X-Tenant-ID; anyone
    else naming a tenant other than their own is refused.
    """
    token = bearer_token()
    if token is None:
        if required or request.headers.get("Authorization"):
            raise Unauthorized("A valid bearer token is required.")
        return None

    identity = _services().accounts.decode_token(token)
    wanted = request.headers.get("X-Tenant-ID")
    if wanted is None or wanted == identity.tenant:
        return identity
    if not identity.is_admin:
        raise TenantMismatch("X-Tenant-ID does not match the token's tenant.")

    from packagerepo.tenants import check_tenant

    return Identity(identity.username, check_tenant(wanted), identity.scopes)


def check_scope(identity: Identity | None, scope: str) -> None:
    """Refuse the request unless ``identity`` holds ``scope``."""
    if scope == "none":
        return
    if identity is None:
        raise Unauthorized("A valid bearer token is required.")
    if not identity.has_scope(scope):
        raise Forbidden(f"This operation needs the {scope} scope.")


def require_scope(
    scope: str, *, allow_anonymous: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a view so it runs only for callers holding ``scope``.

    Sets ``g.identity``; with ``allow_anonymous`` a caller without a token
    gets ``g.identity = None`` instead of a 401.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            identity = resolve_identity(required=not allow_anonymous)
            if identity is not None or not allow_anonymous:
                check_scope(identity, scope)
            g.identity = identity
            return view(*args, **kwargs)

        return guarded

    return decorate


@auth_bp.post("/auth/login")
def login() -> Response:
    from api.requests import json_object

    body = json_object()
    services = _services()
    username = body.get("username")
    services.rate_limits.hit(
        services.settings.login_rate, "login", str(username)[:64], client_address()
    )

    identity = services.accounts.authenticate(username, body.get("password"))
    token, expires_in = services.accounts.issue_token(identity)
    return jsonify(
        {
            "ok": True,
            "token": token,
            "expires_in": expires_in,
            "user": identity.to_dict(),
        }
    )


@auth_bp.get("/auth/me")
@require_scope("read")
def me() -> Response:
    return jsonify({"ok": True, "user": g.identity.to_dict()})


def client_address() -> str:
    """The caller's address as the server saw it (behind a proxy, the
    proxy's: such a deployment should pass the client's on and trust it)."""
    return request.remote_addr or "unknown"
