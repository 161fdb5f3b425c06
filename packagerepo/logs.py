"""Logging set-up: readable text or one JSON object per line.

Execution context (request id, tenant, job, workflow, node) lives in context
variables; a filter copies it onto every record, so a log line in the engine
carries the job and node without each call passing them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

CONTEXT_FIELDS = ("request_id", "tenant", "job", "workflow", "node")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "packagerepo_log_context", default=None
)


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add fields to every log line written inside the block."""
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current execution context onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for name in CONTEXT_FIELDS:
            setattr(record, name, context.get(name, "-"))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message, context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, "-")
            if value != "-":
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [tenant=%(tenant)s job=%(job)s "
    "node=%(node)s req=%(request_id)s] %(message)s"
)
MAX_FIELD_CHARS = 200
"""A context field (a node name, say) is cut to this many characters."""
MAX_MESSAGE_CHARS = 1000

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""Control characters, line separators and bidirectional overrides: what
could split a line, forge one or make it read other than it is."""


def _escaped(text: str, limit: int) -> str:
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text)} characters)"
    return _UNSAFE.sub(lambda found: ascii(found.group())[1:-1], text)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, one line per event whatever the line quotes: names,
    codes and messages a workflow chose have their control characters
    escaped and are cut to a sane length. A traceback keeps its lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)
        safe.message = _escaped(record.message, MAX_MESSAGE_CHARS)
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, "-")
            setattr(safe, name, _escaped(str(value), MAX_FIELD_CHARS))
        return super().formatMessage(safe)


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Route the root logger to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
