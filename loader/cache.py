"""The two-tier cache of validated workflows: an in-process LRU, then Redis.

An entry's digest is the SHA-256 of the canonical JSON of the document, the
node registry's digest and the tenant, so an edited document or registry is
a different key (never served stale) and one tenant's entry is never
another's. The API validates once and stores the validated document;
workers fetch it by digest. Redis entries expire after
``keys.WORKFLOW_CACHE_TTL``; a Redis outage only costs the second tier.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import redis

from loader.catalog import Catalog
from loader.document import MAX_DEPTH, ParsedDocument, depth_of
from loader.problems import Report
from loader.registry import NodeRegistry, load_registry
from loader.validator import validate
from packagerepo import keys

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedWorkflow:
    """A validated (normalised) document, its report and its cache digest.

    The document is shared by every reader of the entry: treat it as
    read-only. ``derived`` holds what a reader built from the document once
    (the worker keeps its graph there), kept and evicted with the entry.
    """

    digest: str
    document: dict[str, Any]
    report: Report
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def canonical_json(document: Any) -> str:
    """The one JSON text of ``document`` that digests are taken over."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def workflow_digest(
    canonical: str, registry_digest: str, tenant: str, notes: str = ""
) -> str:
    """SHA-256 over the canonical document, the registry digest and the tenant.

    ``notes`` are the normalisation warnings of a parsed document, so a
    legacy-encoded document and its normalised twin keep apart reports.
    """
    material = "\n".join([canonical, registry_digest, tenant, notes])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class WorkflowCache:
    """Validated workflows by tenant and digest; counts hits and misses."""

    def __init__(
        self,
        redis_client: redis.Redis | None,
        registry: NodeRegistry | None = None,
        *,
        lru_size: int = 256,
    ) -> None:
        self.redis = redis_client
        self.registry = registry or load_registry()
        self.lru_size = lru_size
        self._entries: OrderedDict[tuple[str, str], CachedWorkflow] = OrderedDict()
        self._lock = threading.Lock()
        self._stats = {"hits_memory": 0, "hits_redis": 0, "misses": 0}
        self._by_file: OrderedDict[tuple[Any, ...], CachedWorkflow] = OrderedDict()

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def validated(self, tenant: str, document: dict[str, Any]) -> CachedWorkflow:
        """The cached entry for ``document``, validating it on a miss."""
        checked = isinstance(document, ParsedDocument) and document.depth_checked
        if not checked and depth_of(document, MAX_DEPTH) > MAX_DEPTH:
            # Too deep to serialise safely: report it, cache nothing.
            return CachedWorkflow(
                "", document, validate(document, registry=self.registry)
            )

        canonical = canonical_json(document)
        notes = getattr(document, "notes", ())
        noted = (
            canonical_json([problem.to_dict() for problem in notes]) if notes else ""
        )
        digest = workflow_digest(canonical, self.registry.digest, tenant, noted)
        entry = self.fetch(tenant, digest)
        if entry is not None:
            return entry

        working = ParsedDocument(json.loads(canonical))
        working.notes = tuple(notes)
        working.depth_checked = True
        report = validate(working, registry=self.registry, tenant=tenant)
        entry = CachedWorkflow(digest, dict(working), report)
        self._remember(tenant, entry)
        self._store_in_redis(tenant, entry)
        return entry

    def validated_file(
        self, catalog: Catalog, tenant: str, name: str
    ) -> CachedWorkflow:
        """The validated entry for a catalog workflow, without reading or
        digesting its file again while the file is unchanged.

        Keyed by the file's stamp (inode, size, mtime), so an edited or
        re-registered workflow is read afresh; the entry itself is still
        keyed by the document's digest like any other.
        """
        key = (tenant, name, *catalog.stamp(tenant, name))
        with self._lock:
            entry = self._by_file.get(key)
            if entry is not None:
                self._by_file.move_to_end(key)
                self._stats["hits_memory"] += 1
                return entry

        document, _source = catalog.read(tenant, name)
        entry = self.validated(tenant, document)
        with self._lock:
            self._by_file[key] = entry
            while len(self._by_file) > self.lru_size:
                self._by_file.popitem(last=False)
        return entry

    def fetch(self, tenant: str, digest: str) -> CachedWorkflow | None:
        """The entry for ``digest``: from memory, else from Redis, else None."""
        with self._lock:
            entry = self._entries.get((tenant, digest))
            if entry is not None:
                self._entries.move_to_end((tenant, digest))
                self._stats["hits_memory"] += 1
                return entry

        entry = self._load_from_redis(tenant, digest)
        with self._lock:
            self._stats["hits_redis" if entry is not None else "misses"] += 1
        if entry is not None:
            self._remember(tenant, entry)
        return entry

    def _remember(self, tenant: str, entry: CachedWorkflow) -> None:
        with self._lock:
            self._entries[(tenant, entry.digest)] = entry
            self._entries.move_to_end((tenant, entry.digest))
            while len(self._entries) > self.lru_size:
                self._entries.popitem(last=False)

    def _store_in_redis(self, tenant: str, entry: CachedWorkflow) -> None:
        if self.redis is None:
            return
        payload = json.dumps(
            {"document": entry.document, "report": entry.report.to_dict()},
            separators=(",", ":"),
            ensure_ascii=False,
        )
        try:
            self.redis.set(
                keys.workflow_cache(tenant, entry.digest),
                payload,
                ex=keys.WORKFLOW_CACHE_TTL,
            )
        except redis.RedisError as exc:
            logger.warning(
                "Could not store workflow %s for tenant %r in Redis: %s.",
                entry.digest[:12],
                tenant,
                exc,
            )

    def _load_from_redis(self, tenant: str, digest: str) -> CachedWorkflow | None:
        if self.redis is None:
            return None
        try:
            payload = self.redis.get(keys.workflow_cache(tenant, digest))
        except redis.RedisError as exc:
            logger.warning(
                "Could not read workflow %s for tenant %r from Redis: %s.",
                digest[:12],
                tenant,
                exc,
            )
            return None
        if payload is None:
            return None

        try:
            stored = json.loads(payload)
            return CachedWorkflow(
                digest, stored["document"], Report.from_dict(stored["report"])
            )
        except (ValueError, KeyError, TypeError):
            logger.warning("Ignoring a malformed cache entry %s in Redis.", digest[:12])
            return None
