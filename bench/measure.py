"""Timing primitives: closed-loop and paced load from client threads,
latency percentiles, and waiting for a Celery queue to drain."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

UNACKED_KEY = "unacked"
"""kombu's Redis hash of delivered, not yet acknowledged messages."""


@dataclass
class Sample:
    """Latencies of completed operations over a wall-clock span."""

    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def summary(self) -> dict[str, Any]:
        """Operations per second and latency percentiles in milliseconds."""
        return {
            "count": len(self.latencies),
            "errors": self.errors,
            "seconds": round(self.elapsed, 3),
            "per_second": round(self.rate, 1),
            **latency_summary(self.latencies),
        }


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    if len(latencies) < 2:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 2),
        "p95_ms": round(cuts[94] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


Operation = Callable[[Any], None]
"""One timed operation, given the calling thread's own client."""


def closed_loop(
    make_client: Callable[[], Any],
    operation: Operation,
    *,
    concurrency: int,
    seconds: float,
    total: int | None = None,
) -> Sample:
    """``concurrency`` threads, each running ``operation`` back to back.

    Every thread starts timing together and stops starting operations once
    ``seconds`` have passed (or ``total`` operations have started); the span
    ends with the last completion.
    """
    sample = Sample()
    lock = threading.Lock()
    started = itertools.count()
    limit = total if total is not None else float("inf")
    clients = [make_client() for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def loop(client: Any) -> None:
        start.wait()
        while time.perf_counter() < deadline[0] and next(started) < limit:
            began = time.perf_counter()
            try:
                operation(client)
            except Exception:
                with lock:
                    sample.errors += 1
                continue
            with lock:
                sample.latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    sample.elapsed = time.perf_counter() - began
    return sample


def paced(
    make_client: Callable[[], Any],
    operation: Operation,
    *,
    rate: float,
    seconds: float,
    threads: int = 8,
) -> Sample:
    """Open-loop load: operation ``i`` starts at ``i / rate`` seconds.

    Latency counts from the scheduled start, so a client that falls behind
    shows up as latency instead of hiding as a lower rate.
    """
    sample = Sample()
    lock = threading.Lock()
    total = int(rate * seconds)
    began = time.perf_counter() + 0.05

    def loop(offset: int) -> None:
        client = make_client()
        for index in range(offset, total, threads):
            due = began + index / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            try:
                operation(client)
            except Exception:
                with lock:
                    sample.errors += 1
                continue
            with lock:
                sample.latencies.append(time.perf_counter() - due)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    sample.elapsed = time.perf_counter() - began
    return sample


def wait_drained(client: redis.Redis, queue: str, *, timeout: float = 300.0) -> float:
    """Block until ``queue`` is empty and nothing is left unacknowledged;
    returns when that happened (``time.perf_counter``)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(queue)
            pipe.hlen(UNACKED_KEY)
            queued, unacked = pipe.execute()
        if queued == 0 and unacked == 0:
            return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError(f"Queue {queue} did not drain in {timeout} seconds.")
