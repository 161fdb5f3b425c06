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

from loader.document import parse_document
from packagerepo.errors import Forbidden, InvalidRequest, WorkflowNotFound
from packagerepo.files import write_atomically
from packagerepo.tenants import check_tenant

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
Source = Literal["bundled", "tenant"]


def check_name(name: str) -> str:
    """``name`` when it is a safe workflow name, else ``InvalidRequest``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidRequest("A workflow name must match ^[a-z0-9][a-z0-9_-]{0,63}$.")
    return name


class Catalog:
    """Bundled workflows plus each tenant's own, by name."""

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
        return parse_document(raw), source

    def save(self, tenant: str, name: str, document: dict[str, Any]) -> None:
        """Store the tenant's workflow durably: temporary file, fsync, rename."""
        check_name(name)
        if (self.bundled_dir / f"{name}.json").exists():
            raise Forbidden(f"The bundled workflow {name!r} is read-only.")

        folder = self.tenant_dir(tenant)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        write_atomically(folder / f"{name}.json", text.encode("utf-8"))
        logger.info("Stored workflow %r for tenant %r.", name, tenant)


def _names_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [
        path.stem
        for path in folder.glob("*.json")
        if NAME_PATTERN.match(path.stem) and path.is_file()
    ]
