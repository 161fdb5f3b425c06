"""Control-flow nodes: routing, merging, waiting and failing on purpose.

Every function here is registered for a ``logic.*`` node type; see
``docs/engine.md`` for their parameters and outputs.
"""

from __future__ import annotations

import json
from typing import Any

from packagerepo.errors import ExpressionFailed, NodeFailed
from worker.expression_values import check_size
from worker.nodes.base import Item, NodeCall, Outputs, implements, workflow_error

MAX_WAIT_MILLISECONDS = 60_000


@implements("logic.if")
def route_if(call: NodeCall) -> Outputs:
    """Items whose ``condition`` is truthy go to main[0], the others to main[1]."""
    passed: list[Item] = []
    failed: list[Item] = []
    for item in call.items:
        condition = call.param("condition", item=item)
        (passed if condition else failed).append(item)
    return Outputs([passed, failed])


@implements("logic.switch")
def route_switch(call: NodeCall) -> Outputs:
    """Each item goes to the output of the first case equal to its ``value``.

    Items matching no case go to the last output. ``true`` never equals 1.
    """
    cases = call.parameters.get("cases")
    if not isinstance(cases, list):
        raise NodeFailed(f"Node {call.name!r} needs a list of cases.")

    routed: list[list[Item]] = [[] for _ in range(len(cases) + 1)]
    for item in call.items:
        value = call.param("value", item=item)
        values = call.evaluate(cases, item)
        routed[_first_match(values, value)].append(item)
    return Outputs(routed)


def _first_match(cases: list[Any], value: Any) -> int:
    for index, case in enumerate(cases):
        if case == value and isinstance(case, bool) == isinstance(value, bool):
            return index
    return len(cases)


@implements("logic.merge")
def merge(call: NodeCall) -> Outputs:
    """All inputs' items, appended in input order or combined by ``key``."""
    mode = call.param("mode", "append")
    if mode == "append":
        return Outputs.single([item for items in call.inputs for item in items])
    if mode != "combineByKey":
        raise NodeFailed(f"Node {call.name!r} has an unknown merge mode {mode!r}.")

    key = call.param("key")
    if not isinstance(key, str) or not key:
        raise NodeFailed(f"Node {call.name!r} needs a key to combine by.")
    return Outputs.single(_combine_by_key(call, key))


MAX_COMPOSITE_KEY_CHARS = 64 * 1024
"""How large (as JSON) a list or object used as a merge key may be."""


def _combine_by_key(call: NodeCall, key: str) -> list[Item]:
    """Items sharing ``item[key]`` fold into one, later inputs winning.

    Groups keep the order in which their key first appeared; items without
    the key are kept as they are, after the groups.
    """
    groups: dict[Any, Item] = {}
    keyless: list[Item] = []
    for number, item in enumerate(item for items in call.inputs for item in items):
        if number % 256 == 0:
            call.check_deadline()
        if key not in item:
            keyless.append(item)
            continue
        group = _group_of(call.name, item[key])
        groups[group] = {**groups.get(group, {}), **item}
    return [*groups.values(), *keyless]


def _group_of(name: str, value: Any) -> Any:
    """What items are grouped by: a scalar as itself with its JSON type (so
    1, 1.0 and true stay apart, as their JSON does), a list or object by its
    canonical JSON, which must stay small."""
    if value is None or isinstance(value, (str, int, float)):
        return (type(value).__name__, value)
    try:
        check_size(value, MAX_COMPOSITE_KEY_CHARS)
        return ("json", json.dumps(value, sort_keys=True))
    except (ExpressionFailed, RecursionError):
        raise NodeFailed(
            f"Node {name!r} combines by a key value that is not small JSON "
            f"(at most {MAX_COMPOSITE_KEY_CHARS} characters).",
            code="INVALID_PARAMETER",
        )


@implements("logic.noop")
def noop(call: NodeCall) -> Outputs:
    return Outputs.single(call.items)


@implements("logic.stop_and_error")
def stop_and_error(call: NodeCall) -> Outputs:
    code, message = workflow_error(call, f"Node {call.name!r} stopped the workflow.")
    raise NodeFailed(message, code=code)


@implements("logic.wait")
def wait(call: NodeCall) -> Outputs:
    """Waits ``milliseconds`` (at most a minute), then passes its input on.

    The wait is sliced so cancel and the node's deadline cut it short.
    """
    milliseconds = call.param("milliseconds", 0)
    valid = isinstance(milliseconds, (int, float)) and not isinstance(
        milliseconds, bool
    )
    if not valid or not 0 <= milliseconds <= MAX_WAIT_MILLISECONDS:
        raise NodeFailed(
            f"Node {call.name!r} can wait 0 to {MAX_WAIT_MILLISECONDS} ms, "
            f"not {milliseconds!r}.",
            code="INVALID_PARAMETER",
        )
    call.sleep(milliseconds / 1000)
    return Outputs.single(call.items)
