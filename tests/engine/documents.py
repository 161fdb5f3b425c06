"""Builders for the small workflow documents the engine tests run."""

from __future__ import annotations

from typing import Any

from worker.engine import RunOutcome


def node(name: str, node_type: str, **fields: Any) -> dict[str, Any]:
    """A node document; ``parameters`` and n8n fields go in ``fields``."""
    return {
        "id": name.lower().replace(" ", "-"),
        "name": name,
        "type": node_type,
        "typeVersion": 1,
        "position": [0, 0],
        "parameters": fields.pop("parameters", {}),
        **fields,
    }


def workflow(
    nodes: list[dict[str, Any]],
    links: list[tuple],
    **top: Any,
) -> dict[str, Any]:
    """A document from nodes and links ``(source, target)``.

    A link may name the output and input: ``(source, target, output, input)``
    where output is an index into ``main`` or ``"error"``.
    """
    connections: dict[str, dict[str, list[list[dict[str, Any]]]]] = {}
    for link in links:
        source, target, output, target_input = (*link, 0, 0)[:4]
        kind, index = ("error", 0) if output == "error" else ("main", output)
        outputs = connections.setdefault(source, {}).setdefault(kind, [])
        while len(outputs) <= index:
            outputs.append([])
        outputs[index].append({"node": target, "type": "main", "index": target_input})
    return {
        "id": "wf",
        "name": "test workflow",
        "nodes": nodes,
        "connections": connections,
        **top,
    }


def statuses(outcome: RunOutcome) -> dict[str, str]:
    return {record["name"]: record["status"] for record in outcome.nodes}


def record(outcome: RunOutcome, name: str) -> dict[str, Any]:
    return next(entry for entry in outcome.nodes if entry["name"] == name)
