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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Item = dict[str, Any]
"""One JSON object flowing between nodes."""


@dataclass(frozen=True)
class Execution:
    """What every expression sees as ``$execution`` and ``$input``."""

    job_id: str
    tenant: str
    input: Any = None
    variables: dict[str, Any] = field(default_factory=dict)


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


def implements(node_type: str) -> Callable[[NodeImplementation], NodeImplementation]:
    """Register ``function`` as the implementation of ``node_type``."""

    def register(function: NodeImplementation) -> NodeImplementation:
        if node_type in IMPLEMENTATIONS:
            raise ValueError(f"Node type {node_type} is implemented twice.")
        IMPLEMENTATIONS[node_type] = function
        return function

    return register
