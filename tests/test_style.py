"""ruff, configured in ``pyproject.toml``, passes on the whole tree, so CI
fails on a lint or formatting slip like it fails on a broken test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_finds_nothing_to_fix(command):
    completed = subprocess.run(
        [sys.executable, "-m", "ruff", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr
