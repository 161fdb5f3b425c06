"""The node registry: every node type the engine ships, read from JSON.

The registry file (``node_registry.json`` beside this module) is loaded once
per process. Its SHA-256 digest is part of every workflow cache key, so an
edited registry can never serve a stale validation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

REGISTRY_PATH = Path(__file__).with_name("node_registry.json")


@dataclass(frozen=True)
class NodeRegistry:
    """Node type descriptions keyed by type name, with the file's digest."""

    types: dict[str, dict[str, Any]]
    digest: str

    def get(self, node_type: str) -> dict[str, Any] | None:
        """The description of ``node_type``, or None when it is unknown."""
        return self.types.get(node_type)

    def output_count(self, node: dict[str, Any]) -> int:
        """How many ``main`` outputs this node has, given its parameters.

        A fixed count is an integer in the registry; a count that depends on
        a list parameter (``logic.switch``'s cases) is
        ``{"fromParameter": name, "extra": n}``.
        """
        description = self.types.get(node.get("type", ""), {})
        outputs = description.get("outputs", 1)
        if isinstance(outputs, int):
            return outputs

        parameters = node.get("parameters") or {}
        values = parameters.get(outputs.get("fromParameter", ""))
        counted = len(values) if isinstance(values, list) else 0
        return counted + int(outputs.get("extra", 0))

    def input_count(self, node_type: str) -> int | None:
        """How many inputs the type declares (``inputs``); None when unbounded."""
        inputs = self.types.get(node_type, {}).get("inputs")
        return inputs if isinstance(inputs, int) else None

    def has_error_output(self, node_type: str) -> bool:
        return bool(self.types.get(node_type, {}).get("errorOutput", False))

    def timeout_seconds(self, node_type: str) -> float:
        return float(self.types.get(node_type, {}).get("timeoutSeconds", 30))


def registry_from_bytes(raw: bytes) -> NodeRegistry:
    """Build a registry from the bytes of a registry file."""
    document = json.loads(raw)
    return NodeRegistry(
        types=document["nodeTypes"],
        digest=hashlib.sha256(raw).hexdigest(),
    )


@cache
def load_registry(path: Path = REGISTRY_PATH) -> NodeRegistry:
    """The registry at ``path``, read once per process."""
    return registry_from_bytes(path.read_bytes())
