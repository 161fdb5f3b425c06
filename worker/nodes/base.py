"""The contract between the DAG engine and node implementations.

A node implementation is a plain function registered for a node type with
``@implements("category.name")``. The engine calls it with a ``NodeCall``
and gets back either ``Outputs`` (items per output index) or ``Respond``
(the body that ends the run). A node that fails raises
``packagerepo.errors.NodeFailed`` (or any ``PackageRepoError``); the engine
turns it into the node's error according to ``onError``.

Implementations never import Celery; whatever outside world they need
(artifact storage, accounts, Redis) arrives in ``NodeCall.services``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from packagerepo.errors import NodeFailed

Item = dict[str, Any]
"""One JSON object flowing between nodes."""

SLEEP_SLICE_SECONDS = 0.05
CODE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
"""An error code a workflow gives is a word like the API's own (OUT_OF_STOCK)."""
MAX_MESSAGE_CHARS = 2000


def workflow_error(call: NodeCall, default_message: str) -> tuple[str, str]:
    """The ``code`` and ``message`` parameters of a node that ends the run
    with an error (``respond.error``, ``logic.stop_and_error``), checked."""
    code = call.param("code") or "WORKFLOW_ERROR"
    if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
        raise NodeFailed(
            f"Node {call.name!r} needs a code of capitals, digits and _ "
            "(at most 64), such as OUT_OF_STOCK.",
            code="INVALID_PARAMETER",
        )
    message = str(call.param("message") or default_message)
    return code, message[:MAX_MESSAGE_CHARS]


"""How long ``NodeCall.sleep`` dozes between checks for cancel and deadline."""


class Cancelled(Exception):
    """Raised inside a node when its job was cancelled; the engine stops the run.

    Deliberately not a ``PackageRepoError``: it is a signal, never a node error.
    """


def _never_cancelled() -> bool:
    return False


@dataclass(frozen=True)
class Execution:
    """What every expression sees as ``$execution`` and ``$input``."""

    job_id: str
    tenant: str
    input: Any = None
    variables: dict[str, Any] = field(default_factory=dict)
    user: str | None = None
    """Who submitted the job (``anonymous`` without a token)."""


@dataclass
class NodeCall:
    """One run of one node, as handed to its implementation.

    ``parameters`` are the raw parameters of the node document. Use
    ``evaluate`` to resolve expressions in a value with ``$json`` bound to a
    given item (the engine supplies it), or ``param`` for a single named
    parameter.
    """

    name: str
    type: str
    parameters: dict[str, Any]
    inputs: list[list[Item]]
    execution: Execution
    services: Any
    evaluate: Callable[[Any, Item | None], Any]
    deadline: float = math.inf
    """``time.monotonic()`` value by which the node must have finished."""
    deadline_code: str = "NODE_TIMEOUT"
    """The error code raised when ``deadline`` passes."""
    is_cancelled: Callable[[], bool] = _never_cancelled

    def check_deadline(self) -> None:
        """Raise ``NodeFailed`` when the node's time is up.

        Nodes that loop over many items or wait call this between steps; the
        engine enforces the same deadline around every node anyway.
        """
        if time.monotonic() >= self.deadline:
            raise NodeFailed(
                f"Node {self.name!r} ran past its time limit.",
                code=self.deadline_code,
            )

    def sleep(self, seconds: float) -> None:
        """Sleep in short slices, stopping early on cancel or deadline."""
        wake_at = time.monotonic() + max(0.0, seconds)
        while True:
            if self.is_cancelled():
                raise Cancelled(f"Node {self.name!r} was cancelled while waiting.")
            self.check_deadline()
            remaining = wake_at - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, SLEEP_SLICE_SECONDS))

    @property
    def items(self) -> list[Item]:
        """All items on the first input."""
        return self.inputs[0] if self.inputs else []

    @property
    def first_item(self) -> Item:
        """The first input item, or an empty one when nothing arrived."""
        items = self.items
        return items[0] if items else {}

    def param(self, name: str, default: Any = None, item: Item | None = None) -> Any:
        """A parameter with its expressions evaluated against ``item``.

        Without ``item`` the first input item is ``$json``.
        """
        if name not in self.parameters:
            return default
        return self.evaluate(
            self.parameters[name], self.first_item if item is None else item
        )


@dataclass(frozen=True)
class Outputs:
    """Items per output index: ``lists[0]`` is ``main[0]``."""

    lists: list[list[Item]]

    @classmethod
    def single(cls, items: list[Item]) -> Outputs:
        return cls([items])


@dataclass(frozen=True)
class Respond:
    """Ends the run with this body; a status of 400 or more fails the job."""

    body: Any
    status: int = 200
    code: str | None = None
    message: str | None = None


NodeResult = Outputs | Respond
NodeImplementation = Callable[[NodeCall], NodeResult]

IMPLEMENTATIONS: dict[str, NodeImplementation] = {}

INLINE_TYPES: set[str] = set()
"""Node types outside the generic categories whose bodies still run inline:
pure computation on their parameters, bounded by the expression limits,
with no file, network or CPU-heavy work (see the NOTE in ``worker.engine``)."""


def implements(
    node_type: str, *, inline: bool = False
) -> Callable[[NodeImplementation], NodeImplementation]:
    """Register ``function`` as the implementation of ``node_type``;
    ``inline`` marks a body that may run on the engine's own thread."""

    def register(function: NodeImplementation) -> NodeImplementation:
        if node_type in IMPLEMENTATIONS:
            raise ValueError(f"Node type {node_type} is implemented twice.")
        IMPLEMENTATIONS[node_type] = function
        if inline:
            INLINE_TYPES.add(node_type)
        return function

    return register
