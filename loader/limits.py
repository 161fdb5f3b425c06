"""How long a workflow may run, read from its document in one place.

The API stores it on the job and sizes Celery's hard time limit from it;
the engine enforces it cooperatively (``worker.run_state``); the reaper
fails a job whose run outlived it instead of running it again.
"""

from __future__ import annotations

from typing import Any

DEFAULT_EXECUTION_TIMEOUT = 300.0
"""Seconds a workflow may run when ``settings.executionTimeout`` is unset."""

MAX_EXECUTION_TIMEOUT = 3600.0
"""The most ``settings.executionTimeout`` may ask for."""


def execution_timeout(
    document: dict[str, Any],
    default: float = DEFAULT_EXECUTION_TIMEOUT,
    maximum: float = MAX_EXECUTION_TIMEOUT,
) -> float:
    """``settings.executionTimeout`` in seconds, bounded; ``default`` if unset."""
    settings = document.get("settings")
    seconds = settings.get("executionTimeout") if isinstance(settings, dict) else None
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return default
    return max(0.0, min(float(seconds), maximum))
