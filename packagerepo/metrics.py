"""Prometheus metrics shared by the API and the workers.

Every metric is defined here, once, so the API and the workers write the same
names. Under gunicorn and Celery's prefork pool each process counts on its
own; with ``PROMETHEUS_MULTIPROC_DIR`` set (``packagerepo run`` and
``packagerepo api`` set it to a fresh directory) ``prometheus_client`` keeps
the counts in files there, and ``exposition()`` adds them all up at scrape
time. That directory must exist before ``prometheus_client`` is first
imported, which is why the commands set it in the environment of the
processes they start.

Labels stay bounded: the API labels requests by the Flask rule (never the raw
path) and by a known method; jobs carry the workflow name, the tenant and the
outcome. A bundled workflow is labelled by its name; any workflow a tenant
registered is labelled ``tenant``, since tenants may register as many as
they like. Tenants are as many as an operator creates, so a service with
very many tenants should drop the tenant label in its scrape config
(``metric_relabel_configs``); job ids never become labels.

The one gauge, the depth of the Celery queue (``LLEN`` in Redis), is read at
scrape time rather than kept, so no multiprocess gauge modes are involved.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED_ENDPOINT = "<unmatched>"

_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
)  # fmt: skip

HTTP_REQUESTS = Counter(
    "packagerepo_http_requests",
    "HTTP requests answered, by method, Flask rule and status.",
    ["method", "endpoint", "status"],
)
HTTP_DURATION = Histogram(
    "packagerepo_http_request_duration_seconds",
    "Time to produce a response (for SSE: until the stream starts).",
    ["method", "endpoint"],
    buckets=_SECONDS_BUCKETS,
)
JOBS_SUBMITTED = Counter(
    "packagerepo_jobs_submitted",
    "Jobs created by execute requests.",
    ["workflow", "tenant"],
)
JOBS_STARTED = Counter(
    "packagerepo_jobs_started",
    "Jobs a worker claimed and began to run (a re-queued job counts again).",
    ["workflow", "tenant"],
)
JOBS_FINISHED = Counter(
    "packagerepo_jobs_finished",
    "Jobs a worker ended, by outcome (succeeded, failed, cancelled).",
    ["workflow", "tenant", "outcome"],
)
JOB_DURATION = Histogram(
    "packagerepo_job_duration_seconds",
    "Execution time of a job on a worker, from claim to its end.",
    ["workflow", "outcome"],
    buckets=_SECONDS_BUCKETS,
)
NODE_DURATION = Histogram(
    "packagerepo_node_duration_seconds",
    "Run time of one node, by node type and the status it ended with.",
    ["node_type", "status"],
    buckets=_SECONDS_BUCKETS,
)
CACHE_LOOKUPS = Counter(
    "packagerepo_workflow_cache_lookups",
    "Validated-workflow cache lookups: hit_memory, hit_redis or miss.",
    ["result"],
)
LEASES_REAPED = Counter(
    "packagerepo_leases_reaped",
    "Jobs whose lease lapsed and that a reaper re-queued or failed.",
)

_CACHE_RESULTS = {"hits_memory": "hit_memory", "hits_redis": "hit_redis"}
_cache_seen: dict[int, dict[str, int]] = {}
_cache_lock = threading.Lock()


def request_labels(method: str, rule: str | None) -> tuple[str, str]:
    """Bounded (method, endpoint) labels for a request."""
    method = method if method in KNOWN_METHODS else "OTHER"
    return method, rule or UNMATCHED_ENDPOINT


def observe_request(method: str, rule: str | None, status: int, seconds: float) -> None:
    method, endpoint = request_labels(method, rule)
    HTTP_REQUESTS.labels(method, endpoint, str(status)).inc()
    HTTP_DURATION.labels(method, endpoint).observe(seconds)


def workflow_label(workflow: str) -> str:
    """The workflow's name if it is bundled, else ``tenant``."""
    return workflow if workflow in _bundled_names() else "tenant"


@functools.cache
def _bundled_names() -> frozenset[str]:
    from packagerepo.services import BUNDLED_WORKFLOWS

    return frozenset(path.stem for path in BUNDLED_WORKFLOWS.glob("*.json"))


def job_submitted(workflow: str, tenant: str) -> None:
    JOBS_SUBMITTED.labels(workflow_label(workflow), tenant).inc()


def job_started(workflow: str, tenant: str) -> None:
    JOBS_STARTED.labels(workflow_label(workflow), tenant).inc()


def job_finished(workflow: str, tenant: str, outcome: str, seconds: float) -> None:
    label = workflow_label(workflow)
    JOBS_FINISHED.labels(label, tenant, outcome).inc()
    JOB_DURATION.labels(label, outcome).observe(seconds)


def node_finished(record: dict[str, Any]) -> None:
    """Observe an ended node's duration from the engine's node record."""
    duration_ms = record.get("duration_ms")
    if not isinstance(duration_ms, int | float):
        return
    NODE_DURATION.labels(str(record.get("type")), str(record.get("status"))).observe(
        duration_ms / 1000
    )


def sync_cache_stats(cache: Any) -> None:
    """Count the cache lookups made since the last call for this cache.

    ``WorkflowCache.stats`` holds running totals per process; turning their
    growth into counter increments makes them add up across processes.
    """
    current = cache.stats
    with _cache_lock:
        seen = _cache_seen.setdefault(id(cache), {})
        for name, total in current.items():
            grown = total - seen.get(name, 0)
            if grown > 0:
                CACHE_LOOKUPS.labels(_CACHE_RESULTS.get(name, "miss")).inc(grown)
            seen[name] = total


class ScrapeGauge(Collector):
    """A gauge read from Redis at scrape time (``read`` gives the value for
    ``labels``); a failed read leaves it out of that scrape."""

    def __init__(
        self,
        name: str,
        documentation: str,
        read: Callable[[], int],
        labels: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.read = read
        self.labels = labels or {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            self.name, self.documentation, labels=list(self.labels)
        )
        try:
            family.add_metric(list(self.labels.values()), self.read())
        except Exception:
            log.warning("%s could not be read for a scrape.", self.name)
            return
        yield family


def multiproc_dir() -> Path | None:
    raw = os.environ.get(MULTIPROC_ENV)
    return Path(raw) if raw else None


def exposition(extra: Sequence[Collector] = ()) -> bytes:
    """The Prometheus text for this process, or for every process sharing the
    multiprocess directory, plus the ``extra`` scrape-time collectors."""
    directory = multiproc_dir()
    if directory is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)

    scrape_time = CollectorRegistry()
    for collector in extra:
        scrape_time.register(collector)
    return body + generate_latest(scrape_time)


def fresh_multiproc_dir(directory: Path | None = None) -> Path:
    """Empty ``directory`` (or a new temporary one) for multiprocess files.

    Files left by an earlier run would be added to this run's counts, so the
    directory is wiped whenever a stack starts.
    """
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="packagerepo-metrics-"))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def serve_worker_metrics(port: int, directory: Path) -> None:
    """Serve the worker's metrics (all of its pool processes) on ``port``."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    start_http_server(port, registry=registry)
    log.info("Worker metrics are served on port %d.", port)
