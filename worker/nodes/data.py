"""Data nodes: shaping items.

``data.set`` assigns fields on every item from values or expressions.
"""

from __future__ import annotations

from typing import Any

from packagerepo.errors import NodeFailed
from worker.nodes.base import Item, NodeCall, Outputs, implements

MAX_FIELD_DEPTH = 32
"""Parts a dotted field name may have; deeper nesting breaks JSON tooling."""


@implements("data.set")
def set_fields(call: NodeCall) -> Outputs:
    """Each item with the ``values`` fields set (``$json`` is that item).

    A dotted field name (``meta.size``) sets a nested field. With
    ``keepOnlySet`` the item holds only the fields set here. Input items are
    never changed in place; every output item is a new object.
    """
    values = call.parameters.get("values")
    if not isinstance(values, dict):
        raise NodeFailed(f"Node {call.name!r} needs an object of values to set.")
    keep_only_set = call.param("keepOnlySet", False) is True
    for field in values:
        if field.count(".") >= MAX_FIELD_DEPTH:
            raise NodeFailed(
                f"Node {call.name!r} sets a field nested deeper than "
                f"{MAX_FIELD_DEPTH} levels.",
                code="INVALID_PARAMETER",
            )

    items = []
    for item in call.items:
        result: Item = {} if keep_only_set else dict(item)
        for field, value in values.items():
            _assign(result, field.split("."), call.evaluate(value, item))
        items.append(result)
    return Outputs.single(items)


def _assign(target: Item, path: list[str], value: Any) -> None:
    """Set ``target[path[0]][path[1]]…`` to ``value``, copying on the way.

    Nested objects are copied before writing so the input item they came
    from is left alone.
    """
    *parents, last = path
    for part in parents:
        inner = target.get(part)
        inner = dict(inner) if isinstance(inner, dict) else {}
        target[part] = inner
        target = inner
    target[last] = value
