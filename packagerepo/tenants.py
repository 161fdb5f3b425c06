"""What a tenant name may be: one rule for tokens, Redis keys and folders.

A tenant name becomes part of Redis keys and a directory under DATA_DIR, so
it is lower-case letters, digits, ``.``, ``_`` and ``-``, starting with a
letter or digit (which also rules out ``.`` and ``..``). Standard library
only, so the loader may use it.
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from packagerepo.errors import InvalidRequest

TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def is_tenant(value: Any) -> TypeGuard[str]:
    """True when ``value`` is a string the tenant rule accepts."""
    return isinstance(value, str) and TENANT_PATTERN.fullmatch(value) is not None


def check_tenant(value: Any) -> str:
    """``value`` when it is an acceptable tenant name, else InvalidRequest."""
    if not is_tenant(value):
        raise InvalidRequest("Tenant names match ^[a-z0-9][a-z0-9._-]{0,63}$.")
    return value
