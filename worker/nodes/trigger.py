"""Trigger nodes: where a run's data comes from.

``trigger.start`` turns the job input into the run's first item.
"""

from __future__ import annotations

from typing import Any

from worker.nodes.base import Item, NodeCall, Outputs, implements


def input_item(job_input: Any) -> Item:
    """The job input as one item: an object as it is, anything else wrapped.

    A missing input (None) is the empty item; any other non-object becomes
    ``{"value": input}``.
    """
    if job_input is None:
        return {}
    if isinstance(job_input, dict):
        return job_input
    return {"value": job_input}


@implements("trigger.start")
def start(call: NodeCall) -> Outputs:
    return Outputs.single([input_item(call.execution.input)])
