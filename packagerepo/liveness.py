"""Who is alive, known without scanning Redis.

Each worker's consumer heartbeat and each pool process's ``server`` report
are listed in a sorted set scored by when they lapse, beside their own keys
with a TTL. Readiness reads the members whose time has not come: one
``ZRANGEBYSCORE``, where a ``SCAN`` for their keys walked the whole keyspace
(seconds with a million keys, past a probe's timeout). Lapsed members are
dropped whenever a member beats.
"""

from __future__ import annotations

import time

import redis


def beat(client: redis.Redis, index: str, member: str, ttl: float) -> None:
    """``member`` is alive for ``ttl`` more seconds."""
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.zadd(index, {member: now + ttl})
        pipe.zremrangebyscore(index, "-inf", now)
        pipe.execute()


def leave(client: redis.Redis, index: str, member: str) -> None:
    """``member`` is gone (a clean stop)."""
    client.zrem(index, member)


def alive(client: redis.Redis, index: str) -> list[str]:
    """The members whose time has not lapsed."""
    members = client.zrangebyscore(index, time.time(), "+inf")
    return [member.decode() for member in members if isinstance(member, bytes)]
