"""Fixtures for the engine tests: a workflow builder, a runner, test nodes.

Pure Python: no Redis, no Celery. The ``test.*`` node types below exist only
here; they are registered once, with a registry that adds them to the real
one.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loader.registry import NodeRegistry, load_registry
from packagerepo.errors import NodeFailed
from worker.engine import EngineLimits, RunOutcome, run_workflow
from worker.nodes.base import Execution, NodeCall, Outputs, implements

ATTEMPTS: dict[str, list[float]] = {}
"""Monotonic times at which each ``test.flaky`` node was tried."""

RELEASE = threading.Event()
"""Lets a ``test.block`` node that the engine abandoned finish."""


@implements("test.flaky")
def flaky(call: NodeCall) -> Outputs:
    """Fails until it has been tried ``succeedOn`` times (never when 0)."""
    tries = ATTEMPTS.setdefault(call.name, [])
    tries.append(time.monotonic())
    succeed_on = call.parameters.get("succeedOn", 0)
    if succeed_on and len(tries) >= succeed_on:
        return Outputs.single([{"tries": len(tries)}])
    raise NodeFailed(f"Try {len(tries)} failed.", code="FLAKY", status=503)


@implements("test.block")
def block(call: NodeCall) -> Outputs:
    """Blocks (without looking at any deadline) until the test releases it."""
    RELEASE.wait(30)
    return Outputs.single(call.items)


@implements("test.crash")
def crash(call: NodeCall) -> Outputs:
    raise RuntimeError("secret internal detail /etc/passwd")


@implements("test.many")
def many(call: NodeCall) -> Outputs:
    count = call.param("count", 1)
    return Outputs.single(
        [{"n": n, "pad": call.param("pad", "")} for n in range(count)]
    )


@implements("test.not_outputs")
def not_outputs(call: NodeCall) -> Any:
    return [{"a": 1}]


@implements("test.constant")
def constant(call: NodeCall) -> Outputs:
    """Emits its ``item`` parameter, as given (no expressions)."""
    return Outputs.single([call.parameters["item"]])


@implements("test.thread")
def thread(call: NodeCall) -> Outputs:
    """Emits the id of the thread its body ran on."""
    return Outputs.single([{"thread": threading.get_ident()}])


@implements("test.inline_thread", inline=True)
def inline_thread(call: NodeCall) -> Outputs:
    """``test.thread``, registered to run inline."""
    return Outputs.single([{"thread": threading.get_ident()}])


TEST_TYPES = {
    "test.thread": {"category": "test", "outputs": 1, "timeoutSeconds": 5},
    "test.inline_thread": {"category": "test", "outputs": 1, "timeoutSeconds": 5},
    "test.constant": {"category": "test", "outputs": 1, "timeoutSeconds": 5},
    "test.flaky": {"category": "test", "outputs": 1, "timeoutSeconds": 5},
    "test.block": {"category": "test", "outputs": 1, "timeoutSeconds": 0.2},
    "test.crash": {"category": "test", "outputs": 1, "timeoutSeconds": 5},
    "test.many": {"category": "test", "outputs": 1, "timeoutSeconds": 5},
    "test.not_outputs": {"category": "test", "outputs": 1, "timeoutSeconds": 5},
}


@pytest.fixture(autouse=True)
def _fresh_test_nodes() -> Iterator[None]:
    ATTEMPTS.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


def _registry_with(**timeouts: float) -> NodeRegistry:
    """The real registry plus the test types, with some timeouts overridden.

    Keyword names use ``_`` for ``.``: ``logic_wait=0.1``.
    """
    base = load_registry()
    types = {**base.types, **TEST_TYPES}
    for name, seconds in timeouts.items():
        node_type = name.replace("_", ".", 1)
        types[node_type] = {**types[node_type], "timeoutSeconds": seconds}
    return dataclasses.replace(base, types=types)


@pytest.fixture
def registry_with() -> Callable[..., NodeRegistry]:
    """Build a test registry with some node types' timeouts overridden."""
    return _registry_with


@pytest.fixture
def registry() -> NodeRegistry:
    return _registry_with()


Runner = Callable[..., RunOutcome]


@pytest.fixture
def run(registry: NodeRegistry) -> Runner:
    """Run a document with the test registry; keywords go to run_workflow.

    ``input`` and ``variables`` build the Execution; ``limits`` may be a
    dict of EngineLimits fields.
    """

    def runner(document: dict[str, Any], **options: Any) -> RunOutcome:
        execution = Execution(
            job_id="job-1",
            tenant="acme",
            input=options.pop("input", None),
            variables=options.pop("variables", {}),
        )
        limits = options.pop("limits", None)
        if isinstance(limits, dict):
            limits = EngineLimits(**limits)
        options.setdefault("registry", registry)
        return run_workflow(document, execution, limits=limits, **options)

    return runner
