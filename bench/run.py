"""End-to-end benchmark, side by side with its floor (``make bench``).

Starts a stack of its own on free ports (redis-server, the API under
gunicorn, Celery worker processes, and workers of a bare Celery no-op app on
the same Redis), then measures in one run: raw redis-py round trips, the
bare-Celery no-op round trip and drain rate (the floor), ``resolve_latest``
over HTTP awaited with ``?wait``, polling and SSE at several client
concurrencies, submission alone, the worker-side drain rate, scaling over
1, 2 and 4 workers on a 50 ms wait workflow, and the RSS of the API and a
worker after many executions against after a few. Prints a table and writes
``bench/results/e2e.json`` (``e2e-quick.json`` with ``--quick``).

    python -m bench.run [--quick] [--workers 2] [--api-processes 2]

The client threads share the machine with the stack, as they would with
any single-box load test; the JSON records the cores it had.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import e2e
from bench.stack import BenchStack

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="End-to-end benchmark of the stack next to a bare-Celery floor.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short cells (under a minute)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes (and floor workers)"
    )
    parser.add_argument(
        "--api-processes", type=int, default=2, help="gunicorn worker processes"
    )
    parser.add_argument("--output", type=Path, help="where to write the JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    plan = e2e.QUICK if args.quick else e2e.FULL
    output = args.output or RESULTS / ("e2e-quick.json" if args.quick else "e2e.json")

    began = time.perf_counter()
    load_at_start = [round(load, 2) for load in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="packagerepo-bench-") as directory:
        stack = BenchStack(Path(directory), api_processes=args.api_processes)
        try:
            stack.start(workers=args.workers, floor_workers=args.workers)
            results = measure(stack, plan, args.workers)
            results["machine"] = machine(stack)
            results["machine"]["load_average_at_start"] = load_at_start
        finally:
            stack.stop()

    results["command"] = command_line(argv)
    results["seconds"] = round(time.perf_counter() - began, 1)
    results["targets"] = targets(results)
    print_table(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\nWrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}"
    )
    return 0


def measure(stack: BenchStack, plan: e2e.Plan, workers: int) -> dict[str, Any]:
    """Every phase, in an order that needs the fewest restarts."""
    results: dict[str, Any] = {"workers": workers, "plan": plan.__dict__}
    log.info("Measuring raw Redis round trips.")
    results["redis"] = e2e.redis_round_trips(stack, plan.redis_round_trips)
    log.info("Measuring the bare-Celery floor.")
    results["floor"] = {
        "round_trip": e2e.floor_round_trips(stack, plan),
        "drain": e2e.floor_drain(stack, plan),
    }
    stack.stop_floor_workers()

    token = e2e.login(stack.base_url)
    client = e2e.ApiClient(stack.base_url, token)
    e2e.publish_artifact(client)
    e2e.register_wait_workflow(client, stack)

    # Warmed each way and at the highest concurrency the run uses, so the
    # API threads that will serve have served before the baseline snapshot
    # (e2e.warm_up says why that matters).
    concurrency = max(plan.concurrencies)
    log.info("Warming up with %d executions each way.", plan.memory_baseline)
    warmed = e2e.warm_up(stack, token, plan.memory_baseline, concurrency)
    before = e2e.memory_snapshot(stack)
    threads_before = e2e.thread_snapshot(stack)
    done = warmed

    log.info("Measuring resolve_latest over HTTP.")
    results["end_to_end"] = e2e.end_to_end(stack, token, plan)
    done += _count(results["end_to_end"])
    log.info("Measuring submission alone and the worker-side drain.")
    results["submission"] = e2e.submission(stack, token, plan)
    done += results["submission"]["worker_drain"]["tasks"]

    # A third snapshot halfway through the rest tells a plateau (no growth
    # over the second half) from a slow leak (growth in both halves).
    # At least a fifth of the target count, even when the phases before
    # already ran that many: the second half must have executions in it.
    remaining = max(plan.memory_executions - done, plan.memory_executions // 5)
    log.info("Running %d more executions for the memory check.", remaining)
    first_half = remaining // 2
    if first_half:
        e2e.executions(stack, token, first_half, concurrency=concurrency)
    middle = e2e.memory_snapshot(stack)
    if remaining - first_half:
        e2e.executions(stack, token, remaining - first_half, concurrency=concurrency)
    after = e2e.memory_snapshot(stack)
    results["memory"] = {
        "executions_before": warmed,
        "executions_middle": done + first_half,
        "executions_after": done + remaining,
        "rss": e2e.growth(before, after),
        "rss_second_half": e2e.growth(middle, after),
        "threads_before": threads_before,
        "threads_after": e2e.thread_snapshot(stack),
    }

    log.info("Measuring scaling over %s workers.", plan.scaling_workers)
    results["scaling"] = e2e.scaling(stack, token, plan)
    return results


def _count(by_mode: dict[str, dict[str, dict]]) -> int:
    return sum(cell["count"] for cells in by_mode.values() for cell in cells.values())


def machine(stack: BenchStack) -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "redis": stack.redis_version(),
        "platform": platform.platform(),
        # Anything else running on the box shows here; numbers are only
        # comparable between runs with a similar load.
        "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
        "commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return found.stdout.strip()


def command_line(argv: list[str] | None, module: str = "bench.run") -> str:
    arguments = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", module, *arguments])


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of issue 8 with the measured value and whether it is met."""
    floor_best = _best(results["floor"]["round_trip"])
    wait_best = _best(results["end_to_end"]["wait"])
    floor_drain = results["floor"]["drain"]["per_second"]
    worker_drain = results["submission"]["worker_drain"]["per_second"]
    scaling = results["scaling"]
    growth = max(row["growth"] for row in results["memory"]["rss"].values())
    checks = {
        "e2e_vs_floor_throughput": (wait_best / floor_best, ">=", 0.5),
        "e2e_throughput_per_second": (wait_best, ">=", 200),
        "worker_side_vs_floor": (worker_drain / floor_drain, ">=", 0.7),
        "wait_p50_ms_at_1": (results["end_to_end"]["wait"]["1"]["p50_ms"], "<", 10),
        "submit_p99_ms_at_100_per_s": (
            results["submission"]["fixed_rate"]["p99_ms"],
            "<",
            10,
        ),
        "scaling_efficiency_min": (
            min(row["efficiency"] for row in scaling.values()),
            ">=",
            0.8,
        ),
        "rss_growth_max": (growth, "<=", 0.10),
    }
    return {
        name: {
            "value": round(value, 3),
            "target": f"{op} {bound}",
            "met": value >= bound
            if op == ">="
            else value <= bound
            if op == "<="
            else value < bound,
        }
        for name, (value, op, bound) in checks.items()
    }


def _best(cells: dict[str, dict]) -> float:
    return max(cell["per_second"] for cell in cells.values())


def print_table(results: dict[str, Any]) -> None:
    floor = results["floor"]["round_trip"]
    print(f"\nMachine: {json.dumps(results['machine'])}")
    print(f"Command: {results['command']}  ({results['seconds']} s)\n")
    _row("measurement", "conc", "per s", "p50 ms", "p95 ms", "p99 ms", "/floor")
    for name, cell in results["redis"].items():
        _cell(f"redis-py {name}", "1", cell)
    for concurrency, cell in floor.items():
        _cell("celery no-op round trip", concurrency, cell)
    for mode, cells in results["end_to_end"].items():
        for concurrency, cell in cells.items():
            ratio = cell["per_second"] / floor[concurrency]["per_second"]
            _cell(f"resolve_latest {mode}", concurrency, cell, ratio)
    submission = results["submission"]
    _cell("submit, max rate", "16", submission["max_rate"])
    _cell("submit, 100/s", "-", submission["fixed_rate"])

    print()
    for mode, cells in results["end_to_end"].items():
        top = max(cells, key=int)
        cpu = cells[top].get("cpu_ms_per_execution", {})
        parts = ", ".join(f"{part} {ms}" for part, ms in cpu.items())
        print(f"CPU ms per execution, {mode} at {top}: {parts}")
    floor_drain = results["floor"]["drain"]
    worker_drain = submission["worker_drain"]
    print(
        f"worker-side drain: no-op {floor_drain['per_second']}/s, "
        f"resolve_latest {worker_drain['per_second']}/s "
        f"({worker_drain['per_second'] / floor_drain['per_second']:.2f} of floor)"
    )
    for workers, row in results["scaling"].items():
        print(
            f"scaling, {workers} workers: {row['per_second']}/s, "
            f"efficiency {row['efficiency']}"
        )
    memory = results["memory"]
    threads_before = memory.get("threads_before", {})
    threads_after = memory.get("threads_after", {})
    for name, row in memory["rss"].items():
        half = memory["rss_second_half"].get(name, {})
        print(
            f"RSS {name}: {row['before_mib']} MiB after "
            f"{memory['executions_before']}, {half.get('before_mib')} MiB after "
            f"{memory['executions_middle']}, {row['after_mib']} MiB after "
            f"{memory['executions_after']} ({row['growth']:+.1%}; second half "
            f"{half.get('growth', 0):+.1%}; threads {threads_before.get(name)} "
            f"-> {threads_after.get(name)})"
        )
    print("\nTargets:")
    for name, check in results["targets"].items():
        mark = "met" if check["met"] else "MISSED"
        print(f"  {name}: {check['value']} (target {check['target']}) {mark}")


def _cell(name: str, concurrency: str, cell: dict, ratio: float | None = None) -> None:
    _row(
        name,
        concurrency,
        f"{cell['per_second']:.0f}",
        _ms(cell["p50_ms"]),
        _ms(cell["p95_ms"]),
        _ms(cell["p99_ms"]),
        f"{ratio:.2f}" if ratio is not None else "",
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(*columns: str) -> None:
    name, *rest = columns
    print(f"{name:<26}" + "".join(f"{column:>9}" for column in rest))


if __name__ == "__main__":
    sys.exit(main())
