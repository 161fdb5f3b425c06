"""``GET /metrics`` in the Prometheus text format, and the request timing
behind it.

Every request is counted by method, Flask rule (``/v1/jobs/<job_id>``, never
the raw path) and status, and timed. The scrape adds what is read live: the
depth of the Celery queue. With
``PROMETHEUS_MULTIPROC_DIR`` shared with the workers (as ``packagerepo run``
does) the workers' job and node metrics appear here too.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, request

from api import services
from packagerepo import keys, metrics
from worker.celery_app import QUEUE, queue_depth

metrics_bp = Blueprint("metrics", __name__)


@metrics_bp.get("/metrics")
def scrape() -> Response:
    redis = services().redis
    gauges = [
        metrics.ScrapeGauge(
            "packagerepo_queue_depth",
            "Messages waiting in the Celery queue (LLEN in Redis).",
            lambda: queue_depth(redis),
            {"queue": QUEUE},
        ),
        metrics.ScrapeGauge(
            "packagerepo_unusable_messages",
            "Queue entries workers set aside as no message (worker.transport).",
            lambda: int(redis.llen(keys.unusable_messages())),
        ),
    ]
    return Response(metrics.exposition(gauges), content_type=metrics.CONTENT_TYPE)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is not None:
        rule = request.url_rule.rule if request.url_rule else None
        elapsed = time.perf_counter() - started
        metrics.observe_request(request.method, rule, response.status_code, elapsed)
    # The cache keeps running totals; counting their growth per request keeps
    # every gunicorn process's lookups in the sum, not only the scraped one's.
    if "cache" in services().__dict__:
        metrics.sync_cache_stats(services().cache)
    return response


def install(app: Flask) -> None:
    """Time every request of ``app`` and serve ``/metrics``."""
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(metrics_bp)
