"""The broker transport: kombu's Redis transport, with two changes.

**Entries that are no message are set aside.** A queue entry that is not a
message this service can take stops a worker when left to kombu and Celery:

- one kombu cannot read (not JSON, nested past Python's recursion limit,
  not an object, a body that is not base64, a delivery tag or delivery
  info of the wrong type) makes kombu raise in the middle of its poll;
- one kombu reads but Celery's consumer chokes on (a body that is not
  protocol 2's ``[args, kwargs, embed]``, a malformed time limit, no task
  id) raises out of Celery's handler; a ``KeyError`` even counts as a lost
  connection, so the consumer reconnects, takes the entry again, and loops.

Celery treats the rest as unrecoverable: the consumer stops, and with it
the worker. Here the entry is moved to ``keys.unusable_messages()`` (cut to
``keys.UNUSABLE_MESSAGE_BYTES``), acknowledged if kombu had recorded it, the
event is logged in one line, and the consumer goes on with the next message.
Celery itself logs and acknowledges what it recognises as bad (a body it
cannot decode, an unknown task). A Redis error while handling a message is
not the message's fault and is left to kombu and Celery, as before.

**One client for the broker's bookkeeping.** kombu builds a new redis-py
client, over its shared connection pool, each time it records a delivery or
an acknowledgement: twice per message, a measurable share of a worker main
process's time (``bench/``). This channel builds one and reuses it; a
redis-py client over a pool is safe to share between threads, and every
command still takes its own connection from the pool.

Selected with ``broker_transport`` (``worker.celery_app``). It relies on
names in kombu's Redis channel (``_brpop_read``, ``_get_client``,
``conn_or_acquire``, ``basic_consume``'s callback and ``Message``);
``tests/test_queue_entries.py`` covers both changes against the pinned
kombu.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cached_property
from queue import Empty
from typing import Any

import fastjsonschema
import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from packagerepo import keys
from worker.celery_app import EXECUTE_TASK, WEBHOOK_TASK

log = logging.getLogger(__name__)


class UnusableMessage(Exception):
    """A queue entry that kombu cannot read as a message."""


class _Message(virtual.Message):
    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        headers = payload.get("headers") if isinstance(payload, dict) else None
        if isinstance(headers, dict) and "compression" in headers:
            # kombu would expand the body here, before any check: a few
            # kilobytes of bzip2 can expand to gigabytes.
            raise UnusableMessage("its body is compressed")
        try:
            super().__init__(payload, channel=channel, **kwargs)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise UnusableMessage(f"{type(error).__name__}: {error}") from error
        # What kombu's bookkeeping then relies on (QoS.append stores the
        # delivery under its tag with its exchange and routing key).
        info = self.delivery_info
        if not isinstance(self.delivery_tag, str) or not self.delivery_tag:
            raise UnusableMessage("its delivery tag is not a string")
        if not isinstance(info, dict) or not all(
            isinstance(info.get(name), str) for name in ("exchange", "routing_key")
        ):
            raise UnusableMessage("its delivery info has no exchange or routing key")


MAX_TIME_LIMIT_SECONDS = 10**7
"""A time limit beyond this (about 115 days, NaN included) is refused."""


_ID = {"type": "string", "minLength": 1, "maxLength": 200}
_OPTIONAL_TEXT = {"type": ["string", "null"], "maxLength": 64 * 1024}
_SCALAR = {"type": ["string", "number", "boolean", "null"], "maxLength": 1024}
MESSAGE_HEADERS_SCHEMA = {
    "type": "object",
    "required": ["task", "id"],
    "properties": {
        "task": {"enum": [EXECUTE_TASK, WEBHOOK_TASK]},
        "id": _ID,
        "root_id": {"type": ["string", "null"], "maxLength": 200},
        "parent_id": {"type": ["string", "null"], "maxLength": 200},
        "lang": {"type": "string", "maxLength": 16},
        "shadow": {"type": ["string", "null"], "maxLength": 200},
        "eta": {"type": ["string", "null"], "maxLength": 64},
        "expires": {"type": ["string", "null"], "maxLength": 64},
        "group": {"type": ["string", "null"], "maxLength": 200},
        "group_index": {"type": ["integer", "null"]},
        "retries": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "timelimit": {"type": ["array", "null"]},  # _check_time_limits
        "argsrepr": _OPTIONAL_TEXT,
        "kwargsrepr": _OPTIONAL_TEXT,
        "origin": {"type": ["string", "null"], "maxLength": 1024},
        "ignore_result": {"type": ["boolean", "null"]},
        "replaced_task_nesting": {"type": "integer", "minimum": 0, "maximum": 100},
        "stamped_headers": {
            "type": ["array", "null"],
            "items": {"type": "string", "maxLength": 200},
            "maxItems": 0,
        },
        "stamps": {"type": "object", "maxProperties": 0},
    },
    # kombu and Celery add a few flags of their own (``redelivered``).
    "additionalProperties": _SCALAR,
}
"""The headers of a message this service sends (Celery's protocol 2, as
``as_task_v2`` writes them for its two tasks): anything else is set aside.
No stamps. (A compressed body is refused earlier, by ``_Message``, before
kombu expands it.)"""

MESSAGE_BODY_SCHEMA = {
    "type": "array",
    "items": [
        {
            "type": "array",
            "maxItems": 2,
            "items": {"type": ["string", "null"], "maxLength": 200},
        },
        {"type": "object", "maxProperties": 0},
        {
            "type": "object",
            "properties": {
                name: {"type": "null"}
                for name in ("callbacks", "errbacks", "chain", "chord")
            },
        },
    ],
    "minItems": 3,
    "additionalItems": False,
}
"""``[args, kwargs, embed]`` of the service's tasks: ids for arguments, no
keyword arguments, and no callbacks, errbacks, chains or chords (which
would run other registered tasks, Celery's built-in ones among them)."""

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_ETA_SECONDS = 24 * 3600
"""A message may wait this long for its ``eta`` (a webhook's retry)."""

_valid_headers = fastjsonschema.compile(MESSAGE_HEADERS_SCHEMA)
_valid_body = fastjsonschema.compile(MESSAGE_BODY_SCHEMA)


def _check_message(message: Any, size: int) -> None:
    """Raise UnusableMessage unless ``message`` is one this service sends."""
    if size > MAX_MESSAGE_BYTES:
        raise UnusableMessage(f"it is over {MAX_MESSAGE_BYTES} bytes")
    try:
        _valid_headers(message.headers)
    except fastjsonschema.JsonSchemaException as error:
        raise UnusableMessage(f"its headers: {error}") from None
    _check_time_limits(message.headers)
    _check_eta(message.headers.get("eta"))
    if message.content_type != "application/json":
        return  # Celery refuses it (accept_content) and acknowledges it
    try:
        _valid_body(message.decode())
    except fastjsonschema.JsonSchemaException as error:
        raise UnusableMessage(f"its body: {error}") from None


def _check_eta(eta: str | None) -> None:
    if eta is None:
        return
    try:
        when = datetime.fromisoformat(eta)
    except ValueError:
        raise UnusableMessage("its eta is not a time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when > datetime.now(UTC) + timedelta(seconds=MAX_ETA_SECONDS):
        raise UnusableMessage("its eta is more than a day away")


def _check_time_limits(headers: Any) -> None:
    """Celery's pool takes a message's time limits as numbers only once the
    message is on its way to a pool process, outside any handler of its
    own, where a malformed one stops the worker: they are checked first."""
    limits = headers.get("timelimit") if isinstance(headers, dict) else None
    if limits is None:
        return
    if not isinstance(limits, list | tuple) or len(limits) != 2:
        raise UnusableMessage("its time limits are not a pair")
    for limit in limits:
        if limit is None:
            continue
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise UnusableMessage("its time limits are not numbers")
        if not 0 <= limit <= MAX_TIME_LIMIT_SECONDS:
            raise UnusableMessage("its time limits are out of range")


class _Client(redis.Redis):
    """A redis-py client that keeps the last entry a ``BRPOP`` took, so an
    entry kombu fails to read can still be set aside as it was."""

    popped: bytes | None = None

    def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        reply = super().parse_response(  # type: ignore[no-untyped-call]
            connection, command_name, **options
        )
        if command_name == "BRPOP":
            self.popped = reply[1] if reply else None
        return reply


# kombu's type stubs lack the channel's private names this class builds on.
_RedisChannel: Any = kombu_redis.Channel


class Channel(_RedisChannel):  # type: ignore[misc]
    Message = _Message

    def _get_client(self) -> Any:
        if self.global_keyprefix:
            return super()._get_client()
        super()._get_client()  # kombu's check of the redis-py version
        return _Client

    @cached_property
    def _shared_client(self) -> redis.Redis:
        client: redis.Redis = self._create_client()
        return client

    @contextlib.contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[Any]:
        yield client or self._shared_client

    def _brpop_read(self, **options: Any) -> Any:
        client = self.client
        client.popped = None
        try:
            return super()._brpop_read(**options)
        except (UnusableMessage, json.JSONDecodeError, RecursionError) as error:
            entry = client.popped
            if entry is None:
                raise
            self._set_aside(entry, error)
            raise Empty() from None

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, *args: Any, **kwargs: Any
    ) -> Any:
        def guarded(message: Any) -> Any:
            entry = self.client.popped or json.dumps(message._raw).encode()
            try:
                _check_message(message, len(entry))
                return callback(message)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                raise
            except Exception as error:
                self._set_aside(entry, error)
                if not no_ack and not message.acknowledged:
                    message.ack()
                return None

        return super().basic_consume(queue, no_ack, guarded, *args, **kwargs)

    def _set_aside(self, entry: bytes, error: BaseException) -> None:
        name = keys.unusable_messages()
        text = str(error).splitlines()[0][:200] if str(error) else ""
        reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
        try:
            with self._shared_client.pipeline(transaction=False) as pipe:
                pipe.rpush(name, entry[: keys.UNUSABLE_MESSAGE_BYTES])
                pipe.ltrim(name, -keys.UNUSABLE_MESSAGES_MAX, -1)
                pipe.execute()
        except redis.RedisError:
            log.error(
                "A queue entry that is no message (%s) was dropped: it could "
                "not be set aside.",
                reason,
            )
            return
        log.warning(
            "A queue entry that is no message (%s, %d bytes) was set aside in %s.",
            reason,
            len(entry),
            name,
        )


class Transport(kombu_redis.Transport):
    Channel = Channel
