"""Workflow documents: parse, normalise, validate, the node registry and the cache.

May import the standard library, jsonschema, and redis (the cache only).
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
