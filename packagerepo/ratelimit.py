"""Rate limits on logins and submissions, counted in Redis by ``limits``."""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from packagerepo import keys
from packagerepo.errors import RateLimited


class RateLimits:
    """Named limits such as ``"50/second"``, shared by every API process."""

    def __init__(self, redis_url: str) -> None:
        storage = RedisStorage(
            redis_url, key_prefix=keys.rate_limit_prefix(), socket_connect_timeout=1
        )
        self._limiter = FixedWindowRateLimiter(storage)

    def hit(self, rate: str, *identifiers: str) -> None:
        """Count one hit; RateLimited with Retry-After once over ``rate``."""
        item = parse(rate)
        if self._limiter.hit(item, *identifiers):
            return

        reset_at = self._limiter.get_window_stats(item, *identifiers).reset_time
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(
            f"Too many requests: the limit is {rate}.", retry_after=retry_after
        )
