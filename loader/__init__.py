"""Workflow documents: parse, normalise, validate, the node registry and the cache.

May import the standard library, jsonschema (with fastjsonschema as a compiled
fast path for documents that pass), and redis (the cache only).

Entry points: ``parse_document`` (bytes to a normalised dict, or
``InvalidWorkflow``), ``validate`` (a ``Report`` of coded ``Problem`` values;
the codes are in ``loader.rules`` and ``docs/validation-rules.md``),
``Catalog`` (bundled and per-tenant workflow files), ``WorkflowCache`` (the
two-tier cache) and ``loader.cli.validate_command`` (``packagerepo validate``).
"""

from loader.cache import CachedWorkflow, WorkflowCache
from loader.catalog import Catalog
from loader.document import parse_document
from loader.problems import Problem, Report
from loader.registry import NodeRegistry, load_registry
from loader.validator import validate

__all__ = [
    "CachedWorkflow",
    "Catalog",
    "NodeRegistry",
    "Problem",
    "Report",
    "WorkflowCache",
    "load_registry",
    "parse_document",
    "validate",
]
