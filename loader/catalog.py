"""Where workflow documents live: bundled files and each tenant's own.

Bundled workflows are the ``*.json`` files of one folder and are read-only.
A tenant's own are stored under ``DATA_DIR/tenants/<tenant>/workflows/`` and
are never visible to another tenant. Names are restricted to
``^[a-z0-9][a-z0-9_-]{0,63}$`` and tenants to a similar pattern, so no name can
address a file outside those folders.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

from loader.document import MAX_BYTES, parse_document
from loader.problems import error
from packagerepo.errors import (
    Forbidden,
    InvalidRequest,
    InvalidWorkflow,
    WorkflowNotFound,
)
from packagerepo.files import write_atomically
from packagerepo.tenants import check_tenant

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
Source = Literal["bundled", "tenant"]


def check_name(name: str) -> str:
    """``name`` when it is a safe workflow name, else ``InvalidRequest``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidRequest("A workflow name must match ^[a-z0-9][a-z0-9_-]{0,63}$.")
    return name


class Catalog:
    """Bundled workflows plus each tenant's own, by name."""

    max_bytes = MAX_BYTES
    """The size limit ``read`` parses with; ``save`` refuses what would pass it."""

    def __init__(self, bundled_dir: Path, data_dir: Path) -> None:
        self.bundled_dir = Path(bundled_dir)
        self.data_dir = Path(data_dir)

    def tenant_dir(self, tenant: str) -> Path:
        return self.data_dir / "tenants" / check_tenant(tenant) / "workflows"

    def names(self, tenant: str) -> list[str]:
        """Names of the bundled workflows and the tenant's own, sorted."""
        found = set(_names_in(self.bundled_dir))
        found.update(_names_in(self.tenant_dir(tenant)))
        return sorted(found)

    def source_of(self, tenant: str, name: str) -> Source:
        """Where ``name`` lives; ``WorkflowNotFound`` when nowhere."""
        check_name(name)
        if (self.bundled_dir / f"{name}.json").is_file():
            return "bundled"
        if (self.tenant_dir(tenant) / f"{name}.json").is_file():
            return "tenant"
        raise WorkflowNotFound(f"No workflow is named {name!r}.")

    def _file(self, tenant: str, name: str) -> tuple[Path, Source]:
        source = self.source_of(tenant, name)
        folder = self.bundled_dir if source == "bundled" else self.tenant_dir(tenant)
        return folder / f"{name}.json", source

    def stamp(self, tenant: str, name: str) -> tuple[Any, ...]:
        """What changes whenever the workflow's file changes: where it lives,
        its inode, size and modification time (a save renames a new file
        into place, so the inode changes too)."""
        path, source = self._file(tenant, name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise WorkflowNotFound(f"No workflow is named {name!r}.")
        return (source, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def read(self, tenant: str, name: str) -> tuple[dict[str, Any], Source]:
        """The parsed document and where it came from.

        Raises ``WorkflowNotFound``, ``InvalidRequest`` for an unsafe name and
        ``InvalidWorkflow`` for a file that does not parse.
        """
        path, source = self._file(tenant, name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            # Removed between the check and the read.
            raise WorkflowNotFound(f"No workflow is named {name!r}.")
        return parse_document(raw, max_bytes=self.max_bytes), source

    def save(self, tenant: str, name: str, document: dict[str, Any]) -> None:
        """Store the tenant's workflow durably: temporary file, fsync, rename.

        Stored compactly, and refused with DOCUMENT_TOO_LARGE when even that
        would not pass the limit ``read`` applies, so whatever is saved can
        be read back.
        """
        check_name(name)
        if (self.bundled_dir / f"{name}.json").exists():
            raise Forbidden(f"The bundled workflow {name!r} is read-only.")

        folder = self.tenant_dir(tenant)
        stored = stored_form(document)
        if len(stored) > self.max_bytes:
            message = (
                f"The workflow would be stored as {len(stored)} bytes; "
                f"the limit is {self.max_bytes}."
            )
            problem = error("DOCUMENT_TOO_LARGE", [], message)
            raise InvalidWorkflow(message, details=[problem.to_dict()])

        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / f"{name}.json", stored)
        logger.info("Stored workflow %r for tenant %r.", name, tenant)


def stored_form(document: dict[str, Any]) -> bytes:
    """The bytes a tenant workflow is stored as: compact JSON in UTF-8.

    Indentation would multiply the size of a document of many small
    objects (connections); text stays as written, not as ``\\u`` escapes.
    A lone surrogate (sent as ``"\\ud800"``) has no UTF-8 form; it can only
    sit inside a string, where its escape reads back the same.
    """
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    text = _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match[0]):04x}", text)
    return text.encode("utf-8") + b"\n"


def _names_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [
        path.stem
        for path in folder.glob("*.json")
        if NAME_PATTERN.match(path.stem) and path.is_file()
    ]
