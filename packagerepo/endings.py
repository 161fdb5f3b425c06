"""Waiting for jobs to end, for every ``?wait`` request of a process at once.

A job that ends is announced as ``tenant/job`` on one channel
(``keys.ended_jobs``, published by the job store's finish script). Each
process that waits follows that channel on a single Redis connection, from
one thread, and wakes the requests waiting for the job that ended. A request
no longer opens, subscribes and closes a connection of its own, which cost
the API and Redis more than the rest of a short job's request.

Every process sees every end (a few dozen bytes each): at thousands of jobs a
second and a handful of API processes that is still little next to a job's
own traffic.

Nothing is lost while the connection is down: a waiter registered then is
told to look for itself, and every waiter is woken to look again once the
listener has subscribed anew. A waiter also looks at least every
``RECHECK_SECONDS``, whatever it hears.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from packagerepo import keys

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0
RECONNECT_SECONDS = 0.5


@dataclass(eq=False)
class Waiter:
    """One request waiting for one job; ``woken`` is set when it should look,
    ``heard`` too when the job's end was announced."""

    member: str
    woken: threading.Event = field(default_factory=threading.Event)
    heard: bool = False

    def wait(self, timeout: float) -> bool:
        """Sleep until woken or ``timeout`` seconds (at most RECHECK_SECONDS)
        pass; True when the job's end was announced meanwhile. Clears both
        for the next wait."""
        self.woken.wait(min(timeout, RECHECK_SECONDS))
        # Cleared before ``heard`` is read: an announcement in between is
        # seen now or wakes the next wait at once, never lost.
        self.woken.clear()
        heard, self.heard = self.heard, False
        return heard

    def announce(self) -> None:
        """The job ended."""
        self.heard = True
        self.woken.set()


class EndedJobs:
    """Follows the ended-jobs channel for this process's waiting requests."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._waiters: dict[str, set[Waiter]] = {}
        self._lock = threading.Lock()
        self._subscribed = False
        self._failing = False
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def waiting(self, tenant: str, job_id: str) -> Iterator[tuple[Waiter, bool]]:
        """Register a waiter for the job while the block runs.

        Yields the waiter and whether the listener was subscribed when it
        registered: only then will an end announced from now on reach it
        for sure, so a caller that registers before the job can end may
        skip its first look when this is True.
        """
        self._ensure_listening()
        waiter = Waiter(f"{tenant}/{job_id}")
        with self._lock:
            self._waiters.setdefault(waiter.member, set()).add(waiter)
            subscribed = self._subscribed
        try:
            yield waiter, subscribed
        finally:
            with self._lock:
                waiting = self._waiters.get(waiter.member)
                if waiting is not None:
                    waiting.discard(waiter)
                    if not waiting:
                        del self._waiters[waiter.member]

    def listening(self) -> bool:
        """Whether the listener is subscribed right now."""
        with self._lock:
            return self._subscribed

    def waiting_count(self) -> int:
        """How many waiters are registered."""
        with self._lock:
            return sum(len(waiting) for waiting in self._waiters.values())

    def _ensure_listening(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._listen, name="ended-jobs", daemon=True
            )
            self._thread.start()

    def _listen(self) -> None:
        while True:
            try:
                self._follow()
            except Exception as error:
                # One line when following stops, not one per retry.
                if not self._failing:
                    log.warning(
                        "Following ended jobs failed (%s); waiting requests "
                        "look for themselves every %.0f s until it is back.",
                        type(error).__name__,
                        RECHECK_SECONDS,
                    )
                self._failing = True
            with self._lock:
                self._subscribed = False
            time.sleep(RECONNECT_SECONDS)

    def _follow(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            pubsub.subscribe(keys.ended_jobs())
            while True:
                message = pubsub.get_message(timeout=RECHECK_SECONDS)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self._on_subscribed()
                elif message["type"] == "message":
                    self._wake(message["data"])
        finally:
            pubsub.close()

    def _on_subscribed(self) -> None:
        # Ends announced while no one listened were missed: every waiter
        # looks again.
        if self._failing:
            log.info("Following ended jobs again.")
            self._failing = False
        with self._lock:
            self._subscribed = True
            waiters = [w for waiting in self._waiters.values() for w in waiting]
        for waiter in waiters:
            waiter.woken.set()

    def _wake(self, data: bytes | str) -> None:
        member = data.decode() if isinstance(data, bytes) else data
        with self._lock:
            waiters = list(self._waiters.get(member, ()))
        for waiter in waiters:
            waiter.announce()
