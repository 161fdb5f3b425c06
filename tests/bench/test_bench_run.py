"""The end-to-end benchmark's entry point parses its options (the benchmark
itself runs under ``make bench``, never in the test suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize(
    ("module", "option"), [("bench.run", "--quick"), ("bench.drain", "--jobs")]
)
def test_each_benchmark_describes_its_options(module: str, option: str) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 0, finished.stderr
    assert option in finished.stdout


def test_each_benchmark_records_its_own_command() -> None:
    from bench.run import command_line

    assert command_line(["--jobs", "10"], module="bench.drain") == (
        "python -m bench.drain --jobs 10"
    )
    assert command_line(["--quick"]) == "python -m bench.run --quick"


def test_cpu_per_execution_splits_the_cpu_spent_by_part() -> None:
    from bench.e2e import cpu_per_execution

    before = {"api": 1.0, "workers": 2.0, "redis": 0.5, "client": 3.0}
    after = {"api": 1.4, "workers": 2.3, "redis": 0.6, "client": 3.2}

    spent = cpu_per_execution(before, after, executions=100)

    assert spent == {
        "api": 4.0,
        "workers": 3.0,
        "redis": 1.0,
        "client": 2.0,
        "total": 10.0,
    }


def test_the_floor_workers_consume_the_floor_queue_and_the_project_workers_theirs():
    """The worker command names its queues; the floor's copy of it consumed
    the project's queue, so the floor never answered."""
    from bench.floor_app import FLOOR_QUEUE
    from bench.stack import floor_worker_command, project_worker_command
    from worker.celery_app import QUEUE

    def queues(command: list[str]) -> str:
        return command[command.index("--queues") + 1]

    assert queues(floor_worker_command("floor@bench")) == FLOOR_QUEUE
    assert queues(project_worker_command("worker@bench")) == QUEUE


def test_a_part_reports_memory_and_threads_for_itself_and_each_child(
    tmp_path: Path,
) -> None:
    """The memory check names every process of a part, so a growing gunicorn
    worker shows as itself, with the threads that explain its growth."""
    import os
    import time

    from bench.stack import Part

    script = (
        "import subprocess, sys, threading, time\n"
        "sleeper = 'import time; time.sleep(60)'\n"
        "child = subprocess.Popen([sys.executable, '-c', sleeper])\n"
        "for _ in range(3):\n"
        "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "part.log"
    part = Part("api", [sys.executable, "-c", script], dict(os.environ), log)
    try:
        deadline = time.monotonic() + 20
        while "ready" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)

        sizes, threads = part.rss(), part.threads()

        assert set(sizes) == set(threads) == {"api", "api/child1"}
        assert all(size > 1_000_000 for size in sizes.values())
        assert threads == {"api": 4, "api/child1": 1}
    finally:
        part.stop()
