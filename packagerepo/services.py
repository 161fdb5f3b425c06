"""The outside world the API, the workers and node implementations share.

One ``Services`` object per process holds the settings, the Redis client,
accounts, the artifact store, the node registry, the workflow catalog and
the validation cache. Parts that import heavier packages are built on first
use, so a process only pays for what it touches.
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from packagerepo.accounts import Accounts
from packagerepo.config import Settings
from packagerepo.endings import EndedJobs
from packagerepo.idempotency import IdempotencyKeys
from packagerepo.jobs import JobStore
from packagerepo.ratelimit import RateLimits

if TYPE_CHECKING:
    from loader import Catalog, WorkflowCache
    from loader.registry import NodeRegistry
    from repository.storage import ArtifactStore

BUNDLED_WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


LOOK_TIMEOUT_SECONDS = 1.0
"""How long a question asked through ``Services.quick_redis`` waits for
Redis's answer."""


def redis_client(
    url: str, *, socket_timeout: float = 5.0, retries: int = 1
) -> redis.Redis:
    """A client that fails fast when Redis is down instead of hanging.

    One quick retry rides over a dropped connection; more would turn an
    outage into many seconds of waiting per request before the 503.
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries),
    )


class Services:
    """Everything with state or I/O that the rest of the code reaches for."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis_client(settings.redis_url)
        self._ended: tuple[int, EndedJobs] | None = None
        self._ended_lock = threading.Lock()

    @property
    def ended_jobs(self) -> EndedJobs:
        """This process's follower of ended jobs (its thread does not
        survive a fork, so a forked process starts its own)."""
        with self._ended_lock:
            if self._ended is None or self._ended[0] != os.getpid():
                self._ended = (os.getpid(), EndedJobs(self.redis))
            return self._ended[1]

    @cached_property
    def accounts(self) -> Accounts:
        return Accounts(self.settings)

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.redis, lease_seconds=self.settings.lease_seconds)

    @cached_property
    def quick_redis(self) -> redis.Redis:
        """A client of its own connections that gives up on an answer after
        ``LOOK_TIMEOUT_SECONDS`` and does not retry: for questions asked
        again soon anyway (a waiting request's looks, readiness probes), so
        a Redis that stops answering (the connection left open) costs them
        about a second, not twice the usual ``socket_timeout``."""
        return redis_client(
            self.settings.redis_url, socket_timeout=LOOK_TIMEOUT_SECONDS, retries=0
        )

    @cached_property
    def looks(self) -> JobStore:
        """The job store a waiting request looks at its job through
        (``quick_redis``): a ``?wait`` overshoots its deadline by about a
        second per look when Redis stops answering. A look that fails is
        simply made again."""
        return JobStore(self.quick_redis, lease_seconds=self.settings.lease_seconds)

    @cached_property
    def idempotency(self) -> IdempotencyKeys:
        return IdempotencyKeys(self.redis)

    @cached_property
    def rate_limits(self) -> RateLimits:
        return RateLimits(self.settings.redis_url)

    @cached_property
    def registry(self) -> NodeRegistry:
        from loader.registry import load_registry

        return load_registry()

    @cached_property
    def catalog(self) -> Catalog:
        from loader import Catalog

        return Catalog(BUNDLED_WORKFLOWS, self.settings.data_dir)

    @cached_property
    def cache(self) -> WorkflowCache:
        from loader import WorkflowCache

        return WorkflowCache(self.redis, self.registry)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        from repository.storage import ArtifactStore

        return ArtifactStore(self.settings.data_dir)
