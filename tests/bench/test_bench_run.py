"""The end-to-end benchmark's entry point parses its options (the benchmark
itself runs under ``make bench``, never in the test suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_bench_run_help_describes_the_quick_option() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 0, finished.stderr
    assert "--quick" in finished.stdout
