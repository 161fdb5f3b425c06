"""Artifact coordinates: namespace, name, version and variant.

A coordinate names one published artifact. Every part arrives from a client
(a URL path segment or a workflow input) and every part later becomes a path
segment under ``DATA_DIR``, so this module is the gate: it normalises each
part (trim; lower-case namespace, name and variant; ``_`` becomes ``-`` in
names) and refuses anything outside design §6's patterns with
``CoordinateInvalid`` (``400 VALIDATION_ERROR``).

The patterns admit ASCII letters, digits, ``.``, ``_`` and ``-`` only and
demand a letter or digit first, so ``.``, ``..``, ``/``, ``\\``, ``%``, NUL
and Unicode look-alikes can never pass. Non-ASCII input is refused *before*
lower-casing because ``str.lower`` maps some non-ASCII letters (the Kelvin
sign, for one) onto ASCII ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import semver

from packagerepo.errors import CoordinateInvalid
from packagerepo.tenants import is_tenant

SEGMENT_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
"""Namespace, name, variant and tenant, matched against the whole string."""

MAX_VERSION_LENGTH = 128
MAX_RAW_LENGTH = 1024
"""Anything longer is refused before any further work is spent on it."""


def _clean(raw: Any, part: str) -> str:
    """``raw`` as a trimmed ASCII string, or ``CoordinateInvalid``."""
    if not isinstance(raw, str):
        raise CoordinateInvalid(f"The {part} must be a string.", details=_detail(part))
    if len(raw) > MAX_RAW_LENGTH:
        raise CoordinateInvalid(f"The {part} is too long.", details=_detail(part))
    if not raw.isascii():
        raise CoordinateInvalid(
            f"The {part} may contain ASCII characters only.", details=_detail(part)
        )

    return raw.strip()


def _detail(part: str) -> list[dict[str, str]]:
    return [{"type": "error", "code": "INVALID_COORDINATE", "field": part}]


def _segment(raw: Any, part: str) -> str:
    value = _clean(raw, part).lower()
    if part == "name":
        value = value.replace("_", "-")

    if not SEGMENT_PATTERN.fullmatch(value):
        raise CoordinateInvalid(
            f"The {part} must start with a letter or digit and contain only "
            "letters, digits, '.', '_' and '-' (at most 128 characters).",
            details=_detail(part),
        )
    return value


def normalise_namespace(raw: Any) -> str:
    """The namespace trimmed and lower-cased, checked against the pattern."""
    return _segment(raw, "namespace")


def normalise_name(raw: Any) -> str:
    """The name trimmed, lower-cased and with ``_`` as ``-``, then checked."""
    return _segment(raw, "name")


def normalise_variant(raw: Any) -> str:
    """The variant trimmed and lower-cased, checked like a namespace."""
    return _segment(raw, "variant")


def normalise_tenant(raw: Any) -> str:
    """The tenant, checked by the one tenant rule; it becomes a directory too.

    Unlike a namespace it is never trimmed or lower-cased: a tenant is an
    identity from a token, not a name a client typed.
    """
    if not is_tenant(raw):
        raise CoordinateInvalid("The tenant name is not acceptable.")
    return raw


def normalise_version(raw: Any) -> str:
    """The version trimmed and checked to be SemVer 2.0.0.

    Case is kept: SemVer compares pre-release identifiers case-sensitively.
    """
    value = _clean(raw, "version")
    if len(value) > MAX_VERSION_LENGTH or not semver.Version.is_valid(value):
        raise CoordinateInvalid(
            f"The version {value[:40]!r} is not a SemVer 2.0.0 version.",
            details=_detail("version"),
        )
    return value


@dataclass(frozen=True)
class Coordinate:
    """One artifact's address: ``namespace/name/version/variant``.

    Build instances with ``Coordinate.parse`` so every part is normalised
    and checked; the constructor itself trusts its arguments.
    """

    namespace: str
    name: str
    version: str
    variant: str

    @classmethod
    def parse(cls, namespace: Any, name: Any, version: Any, variant: Any) -> Coordinate:
        """A normalised coordinate, or ``CoordinateInvalid``."""
        return cls(
            namespace=normalise_namespace(namespace),
            name=normalise_name(name),
            version=normalise_version(version),
            variant=normalise_variant(variant),
        )

    @classmethod
    def from_mapping(cls, fields: dict[str, Any]) -> Coordinate:
        """A coordinate from a mapping such as a workflow input item."""
        if not isinstance(fields, dict):
            raise CoordinateInvalid("A coordinate must be an object.")
        return cls.parse(
            fields.get("namespace"),
            fields.get("name"),
            fields.get("version"),
            fields.get("variant"),
        )

    def to_dict(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "variant": self.variant,
        }

    @property
    def download_url(self) -> str:
        """The path of this artifact's blob on the direct endpoints."""
        return f"/v1/{self}/blob"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}/{self.version}/{self.variant}"
