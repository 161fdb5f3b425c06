"""User accounts, password hashes and JWTs.

Users live as one JSON file each under ``DATA_DIR/users/`` with a bcrypt
hash; files are written through a temporary file and a rename, so a crash
never leaves half a user behind. Tokens are HS256 JWTs carrying ``sub``,
``tenant``, ``scopes``, ``iat``, ``exp`` and ``iss``; decoding pins the
algorithm and requires every one of those claims.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import jwt

from packagerepo.config import Settings
from packagerepo.errors import AlreadyExists, InvalidRequest, NotFound, Unauthorized
from packagerepo.files import fsync_directory, write_atomically
from packagerepo.keys import ANONYMOUS_TENANT
from packagerepo.tenants import check_tenant, is_tenant

log = logging.getLogger(__name__)

SCOPES = ("read", "write", "admin")
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
REQUIRED_CLAIMS = ["sub", "tenant", "scopes", "iat", "exp", "iss"]
BCRYPT_ROUNDS = int(os.environ.get("BCRYPT_ROUNDS", "12"))
BCRYPT_MAX_BYTES = 72
"""bcrypt reads a password's first 72 bytes; a longer one is refused."""
# A hash to compare against when the user does not exist, so an unknown name
# costs the same time as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(4))


@dataclass(frozen=True)
class Identity:
    """Who is calling: a user in a tenant with scopes."""

    username: str
    tenant: str
    scopes: tuple[str, ...]

    def has_scope(self, scope: str) -> bool:
        """True when the identity holds ``scope``; ``admin`` implies all."""
        if scope == "none":
            return True
        return scope in self.scopes or "admin" in self.scopes

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def to_dict(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "tenant": self.tenant,
            "scopes": list(self.scopes),
        }


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The scopes, checked against the known set."""
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise InvalidRequest(f"Scopes must be among {', '.join(SCOPES)}.")
    return tuple(dict.fromkeys(scopes))


def jwt_secret(settings: Settings) -> str:
    """The signing secret: JWT_SECRET, or a per-DATA_DIR one in development.

    Outside development the service refuses to start without JWT_SECRET.
    """
    if settings.jwt_secret:
        return settings.jwt_secret
    if not settings.development:
        raise RuntimeError("JWT_SECRET must be set outside development mode.")

    path = settings.data_dir / ".dev-jwt-secret"
    if not path.exists():
        write_atomically(path, secrets.token_hex(32).encode(), mode=0o600)
    return path.read_text().strip()


class Accounts:
    """Users on disk and the tokens issued to them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.users_dir = settings.data_dir / "users"
        self._secret = jwt_secret(settings)

    def _user_path(self, username: str) -> Path:
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise InvalidRequest("Usernames match ^[a-z0-9][a-z0-9._-]{0,63}$.")
        return self.users_dir / f"{username}.json"

    def add_user(
        self,
        username: str,
        password: str,
        *,
        tenant: str,
        scopes: list[str] | tuple[str, ...],
        replace: bool = False,
    ) -> Identity:
        """Create (or with ``replace``, overwrite) a user."""
        path = self._user_path(username)
        if path.exists() and not replace:
            raise AlreadyExists(f"User {username} already exists.")
        if not password:
            raise InvalidRequest("A password must not be empty.")
        if not _is_text(password):
            raise InvalidRequest("A password must be Unicode text (UTF-8).")
        if len(password.encode()) > BCRYPT_MAX_BYTES:
            raise InvalidRequest(
                f"A password must be at most {BCRYPT_MAX_BYTES} bytes "
                "(bcrypt reads no further)."
            )
        if tenant == ANONYMOUS_TENANT:
            raise InvalidRequest(
                f"Tenant {ANONYMOUS_TENANT} holds the anonymous jobs; "
                "no user can belong to it."
            )

        identity = Identity(username, check_tenant(tenant), check_scopes(scopes))
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS))
        record = {
            **identity.to_dict(),
            "password_hash": hashed.decode(),
            # Tokens issued before this moment no longer speak for the user.
            "updated_at": _now(),
        }
        write_atomically(path, json.dumps(record).encode(), mode=0o600)
        log.info("User %s was saved in tenant %s.", username, tenant)
        return identity

    def delete_user(self, username: str) -> None:
        """Remove a user; the tokens issued to them stop working at once."""
        path = self._user_path(username)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound(f"User {username} does not exist.") from None
        fsync_directory(path.parent)
        log.info("User %s was deleted.", username)

    def authenticate(self, username: Any, password: Any) -> Identity:
        """The identity of a user whose password matches, else Unauthorized."""
        if not isinstance(username, str) or not isinstance(password, str):
            raise Unauthorized("Invalid username or password.")

        if not _is_text(password):
            raise Unauthorized("Invalid username or password.")
        record = self._read_user(username)
        stored = record["password_hash"].encode() if record else _DUMMY_HASH
        matches = bcrypt.checkpw(password.encode()[:BCRYPT_MAX_BYTES], stored)
        if not record or not matches:
            raise Unauthorized("Invalid username or password.")
        return Identity(record["username"], record["tenant"], tuple(record["scopes"]))

    def _read_user(self, username: str) -> dict[str, Any] | None:
        try:
            path = self._user_path(username)
            record = json.loads(path.read_text())
        except (InvalidRequest, FileNotFoundError, ValueError):
            return None
        if not _is_user_record(record):
            log.warning("The record of user %s is not a user record.", username)
            return None
        return dict(record)

    def issue_token(self, identity: Identity) -> tuple[str, int]:
        """A signed token for ``identity`` and its lifetime in seconds."""
        now = _now()
        ttl = self.settings.jwt_ttl_seconds
        claims = {
            "sub": identity.username,
            "tenant": identity.tenant,
            "scopes": list(identity.scopes),
            # A NumericDate may have a fraction (RFC 7519 §2); milliseconds
            # tell a token from a password change in the same second.
            "iat": now,
            "exp": int(now) + ttl,
            "iss": self.settings.jwt_issuer,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256"), ttl

    def decode_token(self, token: Any) -> Identity:
        """The identity in a valid token; Unauthorized for anything else."""
        if not isinstance(token, str) or not token:
            raise Unauthorized("A bearer token is required.")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=self.settings.jwt_issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.")
        except jwt.PyJWTError:
            raise Unauthorized("The token is invalid.")
        identity = _identity_from_claims(claims)
        self._check_user_unchanged(identity, claims["iat"])
        return identity

    def _check_user_unchanged(self, identity: Identity, issued_at: Any) -> None:
        """A token speaks for its user as the user is now: one deleted, moved
        to another tenant, stripped of a scope the token carries, or saved
        again (a new password) since the token was issued is refused."""
        record = self._read_user(identity.username)
        if record is None:
            raise Unauthorized("The token's user no longer exists.")
        unchanged = (
            record.get("tenant") == identity.tenant
            and set(identity.scopes) <= set(record.get("scopes", ()))
            and isinstance(issued_at, int | float)
            and issued_at >= record.get("updated_at", 0)
        )
        if not unchanged:
            raise Unauthorized("The token was issued before its user changed.")

    def ensure_admin(self) -> str | None:
        """Seed the admin user; returns the password seeded in development.

        In development the warning comes on every start while ``admin``
        still has the seeded password, not only on the start that seeded it.
        """
        if self._read_user("admin"):
            if self.settings.development and self._has_seeded_password():
                log.warning(
                    "DEVELOPMENT MODE: user admin still has the password admin "
                    "(tenant default). Never run like this in production."
                )
            return None
        if self.settings.admin_password:
            self.add_user(
                "admin",
                self.settings.admin_password,
                tenant="default",
                scopes=["admin"],
            )
            return None
        if self.settings.development:
            self.add_user("admin", "admin", tenant="default", scopes=["admin"])
            log.warning(
                "DEVELOPMENT MODE: seeded user admin with password admin in "
                "tenant default. Never run like this in production."
            )
            return "admin"
        log.warning("No admin user exists and ADMIN_PASSWORD is not set.")
        return None

    def _has_seeded_password(self) -> bool:
        try:
            self.authenticate("admin", "admin")
        except Unauthorized:
            return False
        return True


def _now() -> float:
    return round(time.time(), 3)


def _is_user_record(record: Any) -> bool:
    """A stored user, in a tenant a user may have (not the anonymous one)."""
    return (
        isinstance(record, dict)
        and all(
            isinstance(record.get(field), str)
            for field in ("username", "tenant", "password_hash")
        )
        and isinstance(record.get("scopes"), list)
        and record["tenant"] != ANONYMOUS_TENANT
    )


def _is_text(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8 (no lone surrogates, such as the
    ones Python makes of undecodable bytes in the environment)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _identity_from_claims(claims: dict[str, Any]) -> Identity:
    scopes = claims.get("scopes")
    tenant = claims.get("tenant")
    subject = claims.get("sub")
    if not (
        isinstance(scopes, list)
        and all(scope in SCOPES for scope in scopes)
        and is_tenant(tenant)
        and tenant != ANONYMOUS_TENANT
        and isinstance(subject, str)
    ):
        raise Unauthorized("The token's claims are invalid.")
    return Identity(subject, tenant, tuple(scopes))
