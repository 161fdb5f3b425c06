"""Idempotency-Key records: at most one job per key, whatever Redis does.

A key's record names one job and the digest of the request body
(``{"job", "body"}``). Three rules keep one job per key even when replies
are lost, requests are slow, or a request fails half way:

- a job is only created while the key's record names it: the job store's
  create script checks the record in the same step (``fence``);
- a record moves to another job only when the job it names does not exist,
  checked in the same step (``take_over``); once its job exists, a record
  stays with it;
- a record is only deleted if it still names the job its request failed to
  create (``release``).

A record lives no longer than the tenant's ended jobs do (at most 24 hours),
so it does not outlive its job by much and hand a replay a job that is gone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import redis

from packagerepo import keys
from packagerepo.errors import IdempotencyKeyReused

# SET NX, or the record already there, in one step.
RESERVE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""

# The record moves from ARGV[1] (or from no record) to ARGV[2] only while the
# job ARGV[1] names (hash KEYS[2]) does not exist; answers the record that
# holds afterwards.
TAKE_OVER = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return current end
if redis.call('EXISTS', KEYS[2]) == 1 then return ARGV[1] end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return ARGV[2]
"""

# Deletes the record only if it is still ARGV[1].
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class KeyMoved(Exception):
    """The key's record names another job now: this request's job must not
    be created (raised by the job store's fenced create)."""


@dataclass(frozen=True)
class Binding:
    """An Idempotency-Key of a tenant and the body it was sent with."""

    tenant: str
    key: str
    body_digest: str

    @property
    def redis_key(self) -> str:
        return keys.idempotency(
            self.tenant, hashlib.sha256(self.key.encode()).hexdigest()
        )

    def record(self, job_id: str) -> str:
        return json.dumps({"job": job_id, "body": self.body_digest})

    def fence(self, job_id: str) -> tuple[str, str]:
        """What the create script checks: the key, and its record naming
        ``job_id``."""
        return self.redis_key, self.record(job_id)


class IdempotencyKeys:
    """The Redis side of the rules in the module docstring."""

    def __init__(self, client: redis.Redis) -> None:
        self._reserve = client.register_script(RESERVE)
        self._take_over = client.register_script(TAKE_OVER)
        self._release = client.register_script(RELEASE)

    def reserve(self, binding: Binding, job_id: str) -> str | None:
        """Bind the key to ``job_id``: None when it was free (the caller
        creates the job), else the job it names (same body), or
        IdempotencyKeyReused (another body)."""
        held = self._reserve(
            keys=[binding.redis_key],
            args=[binding.record(job_id), _ttl(binding.tenant)],
        )
        return None if held is None else _job_of(binding, held)

    def take_over(self, binding: Binding, stale_job: str, job_id: str) -> str:
        """Bind the key to ``job_id`` in place of ``stale_job`` if that job
        does not exist; answers the job the key names afterwards."""
        held = self._take_over(
            keys=[binding.redis_key, keys.job(binding.tenant, stale_job)],
            args=[
                binding.record(stale_job),
                binding.record(job_id),
                _ttl(binding.tenant),
            ],
        )
        return _job_of(binding, held)

    def release(self, binding: Binding, job_id: str) -> None:
        """Free the key if it still names ``job_id`` (a job never created)."""
        self._release(keys=[binding.redis_key], args=[binding.record(job_id)])


def _ttl(tenant: str) -> int:
    return min(keys.IDEMPOTENCY_TTL, keys.ended_job_ttl(tenant))


def _job_of(binding: Binding, raw: bytes | str) -> str:
    record = json.loads(raw)
    if record.get("body") != binding.body_digest:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with another workflow or body."
        )
    job: str = record["job"]
    return job
