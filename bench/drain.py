"""Where one worker's CPU goes per job (``python -m bench.drain``).

Starts a stack of its own (redis-server, the API, one worker of one pool
process), queues ``--jobs`` ``resolve_latest`` jobs with the worker paused,
then times their drain and reads the CPU that Celery's main process and the
pool process spent on it. Their ratio is what to compare across commits:
the main process does Celery's part of every message, which the project's
code does not change, so the ratio holds still while the machine's speed
moves. Prints a line a process and writes ``bench/results/drain.json``.

    python -m bench.drain [--jobs 3000] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import psutil

from bench import e2e
from bench.run import RESULTS, command_line, machine
from bench.stack import BenchStack
from worker.celery_app import QUEUE

WARM_UP_EXECUTIONS = 200
SUBMIT_CONCURRENCY = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drain",
        description="CPU per job of one worker's main and pool process.",
    )
    parser.add_argument("--jobs", type=int, default=3000, help="jobs to drain")
    parser.add_argument("--output", type=Path, help="where to write the JSON")
    return parser.parse_args(argv)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(stack: BenchStack, jobs: int) -> dict[str, float]:
    """Drain ``jobs`` queued jobs; CPU milliseconds per job of each process."""
    token = e2e.login(stack.base_url)
    e2e.publish_artifact(e2e.ApiClient(stack.base_url, token))
    e2e.executions(stack, token, WARM_UP_EXECUTIONS, concurrency=4)
    stack.pause(stack.workers)
    e2e.closed_loop(
        lambda: e2e.ApiClient(stack.base_url, token),
        e2e.ApiClient.submit,
        concurrency=SUBMIT_CONCURRENCY,
        seconds=3600.0,
        total=jobs,
    )
    main = psutil.Process(stack.workers[0].process.pid)
    [pool] = main.children()
    before = _cpu_seconds(main), _cpu_seconds(pool)
    drained = e2e.drain(stack, stack.workers, QUEUE, jobs)
    main_ms = 1000 * (_cpu_seconds(main) - before[0]) / jobs
    pool_ms = 1000 * (_cpu_seconds(pool) - before[1]) / jobs
    return {
        "jobs": jobs,
        "per_second": drained["per_second"],
        "main_ms_per_job": round(main_ms, 3),
        "pool_ms_per_job": round(pool_ms, 3),
        "pool_to_main": round(pool_ms / main_ms, 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output = args.output or RESULTS / "drain.json"
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="packagerepo-drain-") as directory:
        stack = BenchStack(Path(directory))
        try:
            stack.start(workers=1, floor_workers=0)
            results: dict = {"drain": measure(stack, args.jobs)}
            results["machine"] = machine(stack)
        finally:
            stack.stop()
    results["command"] = command_line(argv, module="bench.drain")
    results["seconds"] = round(time.perf_counter() - began, 1)
    drain = results["drain"]
    print(
        f"{drain['jobs']} jobs at {drain['per_second']}/s: main process "
        f"{drain['main_ms_per_job']} ms/job, pool process "
        f"{drain['pool_ms_per_job']} ms/job, ratio {drain['pool_to_main']}"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
