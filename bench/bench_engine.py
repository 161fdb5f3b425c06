"""Engine overhead per node: a 200-node chain and a 200-wide fan-out/merge.

Runs each workflow many times in this process and reports the time per node
(the best of five batch medians), next to a floor: calling the same node
implementations directly, with no engine around them. The engine runs in
one process with no I/O, so a Celery or Redis round trip is not its floor.
Prints a table and writes ``bench/results/engine.json``.

    .venv/bin/python bench/bench_engine.py [--runs 200] [--width 200]

``--runs`` is the number of runs per batch."""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loader.registry import load_registry
from worker.engine import load_implementations, run_workflow
from worker.nodes.base import Execution, NodeCall

TARGET_MICROSECONDS = 50.0
RESULTS = Path(__file__).resolve().parent / "results" / "engine.json"


def node(name: str, node_type: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": node_type,
        "typeVersion": 1,
        "position": [0, 0],
        "parameters": {},
    }


def link(target: str, index: int = 0) -> dict[str, Any]:
    return {"node": target, "type": "main", "index": index}


def chain_workflow(length: int) -> dict[str, Any]:
    names = [f"Noop {index}" for index in range(length)]
    connections = {"Start": {"main": [[link(names[0])]]}}
    for source, target in itertools.pairwise(names):
        connections[source] = {"main": [[link(target)]]}
    nodes = [node("Start", "trigger.start")] + [node(n, "logic.noop") for n in names]
    return {"name": "chain", "nodes": nodes, "connections": connections}


def fan_workflow(width: int) -> dict[str, Any]:
    names = [f"Branch {index}" for index in range(width)]
    connections = {"Start": {"main": [[link(name) for name in names]]}}
    for index, name in enumerate(names):
        connections[name] = {"main": [[link("Merge", index)]]}
    nodes = [node("Start", "trigger.start")]
    nodes += [node(n, "logic.noop") for n in names] + [node("Merge", "logic.merge")]
    return {"name": "fan", "nodes": nodes, "connections": connections}


def floor_for(document: dict[str, Any]) -> Callable[[], None]:
    """Call each node's implementation once, directly: the engine-free floor."""
    implementations = load_implementations()
    execution = Execution("bench", "bench", {"id": 1})
    calls = [
        (
            implementations[entry["type"]],
            NodeCall(
                entry["name"],
                entry["type"],
                {},
                [[{"id": 1}]],
                execution,
                None,
                lambda value, item=None: value,
            ),
        )
        for entry in document["nodes"]
    ]

    def floor() -> None:
        for implementation, call in calls:
            implementation(call)

    return floor


def timed(function: Callable[[], Any], runs: int, batches: int = 5) -> float:
    """Seconds per call: the best of ``batches`` medians of ``runs`` calls.

    Taking the best batch keeps other processes on a shared machine from
    inflating the number; the median inside a batch keeps one lucky call
    from deflating it.
    """
    function()  # warm caches before timing
    medians = []
    for _ in range(batches):
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            function()
            samples.append(time.perf_counter() - start)
        medians.append(statistics.median(samples))
    return min(medians)


def measure(name: str, document: dict[str, Any], runs: int) -> dict[str, Any]:
    registry = load_registry()
    execution = Execution("bench", "bench", {"id": 1})
    nodes = len(document["nodes"])

    def engine() -> None:
        outcome = run_workflow(document, execution, registry=registry)
        assert outcome.status == "succeeded", outcome.error

    def engine_observed() -> None:
        run_workflow(
            document,
            execution,
            registry=registry,
            observer=lambda kind, payload: None,
            is_cancelled=lambda: False,
        )

    per_node = {
        label: timed(function, runs) / nodes * 1e6
        for label, function in (
            ("engine", engine),
            ("engine_observed", engine_observed),
            ("floor", floor_for(document)),
        )
    }
    return {
        "scenario": name,
        "nodes": nodes,
        "runs": runs,
        "engine_us_per_node": round(per_node["engine"], 2),
        "engine_observed_us_per_node": round(per_node["engine_observed"], 2),
        "floor_us_per_node": round(per_node["floor"], 2),
        "overhead_us_per_node": round(per_node["engine"] - per_node["floor"], 2),
        "run_ms": round(per_node["engine"] * nodes / 1000, 3),
        "meets_target": per_node["engine"] - per_node["floor"] < TARGET_MICROSECONDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--width", type=int, default=200)
    arguments = parser.parse_args()

    rows = [
        measure("chain of logic.noop", chain_workflow(arguments.width), arguments.runs),
        measure(
            "fan-out into logic.merge", fan_workflow(arguments.width), arguments.runs
        ),
    ]

    header = (
        "scenario",
        "nodes",
        "run ms",
        "engine µs/node",
        "+observer µs/node",
        "floor µs/node",
        "overhead µs/node",
        f"< {TARGET_MICROSECONDS:g} µs",
    )
    print(" | ".join(header))
    for row in rows:
        print(
            " | ".join(
                str(value)
                for value in (
                    row["scenario"],
                    row["nodes"],
                    row["run_ms"],
                    row["engine_us_per_node"],
                    row["engine_observed_us_per_node"],
                    row["floor_us_per_node"],
                    row["overhead_us_per_node"],
                    "yes" if row["meets_target"] else "NO",
                )
            )
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "engine",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "target_us_per_node": TARGET_MICROSECONDS,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"Wrote {RESULTS}")


if __name__ == "__main__":
    main()
