"""The broker transport: kombu's Redis transport, with two changes.

**Entries that are no message are set aside.** A queue entry that is not
kombu's JSON envelope (not JSON, not an object, no delivery tag, a body that
is not base64) makes kombu raise in the middle of its poll, and Celery
treats that as unrecoverable: the consumer stops, and with it the worker.
Here the entry is moved to ``keys.unusable_messages()``, the event is
logged once, and the consumer goes on with the next message. (An envelope
whose *body* Celery cannot decode, or that names an unknown task, never
reaches this: Celery logs and acknowledges it itself.)

**One client for the broker's bookkeeping.** kombu builds a new redis-py
client, over its shared connection pool, each time it records a delivery or
an acknowledgement: twice per message, a measurable share of a worker main
process's time (``bench/``). This channel builds one and reuses it; a
redis-py client over a pool is safe to share between threads, and every
command still takes its own connection from the pool.

Selected with ``broker_transport`` (``worker.celery_app``). It relies on
three names in kombu's Redis channel (``_brpop_read``, ``_get_client`` and
``conn_or_acquire``); ``tests/test_queue_entries.py`` covers both changes
against the pinned kombu.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from functools import cached_property
from queue import Empty
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from packagerepo import keys

log = logging.getLogger(__name__)


class UnusableMessage(Exception):
    """A queue entry that kombu cannot read as a message."""


class _Message(virtual.Message):
    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        try:
            super().__init__(payload, channel=channel, **kwargs)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise UnusableMessage(f"{type(error).__name__}: {error}") from error


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
        except (UnusableMessage, json.JSONDecodeError) as error:
            entry = client.popped
            if entry is None:
                raise
            self._set_aside(entry, error)
            raise Empty() from None

    def _set_aside(self, entry: bytes, error: Exception) -> None:
        name = keys.unusable_messages()
        reason = str(error).splitlines()[0][:200] if str(error) else "unreadable"
        try:
            with self._shared_client.pipeline(transaction=False) as pipe:
                pipe.rpush(name, entry)
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
