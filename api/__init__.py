"""The HTTP API: a Flask app factory and one blueprint per resource.

May import the loader, the repository package, the service core
(``packagerepo``) and the worker's task *signatures* only (never the engine).

``services()`` returns the process's ``packagerepo.services.Services``
(settings, redis, accounts, jobs, artifacts, registry, catalog, cache).
"""

from __future__ import annotations

import logging

from celery import Celery
from flask import Flask, current_app
from flask.json.provider import DefaultJSONProvider

from packagerepo.config import Settings
from packagerepo.services import Services
from worker.celery_app import make_celery

log = logging.getLogger(__name__)

JSON_BODY_LIMIT_DEFAULT = 1024 * 1024


def create_app(
    settings: Settings | None = None, services: Services | None = None
) -> Flask:
    """Build the API for ``settings`` (read from the environment by default)."""
    settings = settings or Settings.from_env()
    services = services or Services(settings)

    app = Flask(__name__)
    # werkzeug would answer "/v1//jobs" with a redirect page in HTML, past
    # every error handler; unmerged, it is a plain (JSON) 404 instead.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = _InsertionOrderJSON(app)
    app.extensions["packagerepo"] = services
    app.extensions["celery"] = make_celery(settings)

    from api import errors, metrics, requests

    errors.install(app)
    requests.install(app)
    metrics.install(app)
    _register_blueprints(app)
    return app


class _InsertionOrderJSON(DefaultJSONProvider):
    """Flask's JSON with keys in the order the code builds them."""

    sort_keys = False


def _register_blueprints(app: Flask) -> None:
    from api.artifacts import artifacts_bp
    from api.auth import auth_bp
    from api.health import health_bp
    from api.jobs import jobs_bp
    from api.openapi import openapi_bp
    from api.workflows import workflows_bp

    blueprints = (auth_bp, health_bp, jobs_bp, artifacts_bp, openapi_bp, workflows_bp)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)


def services() -> Services:
    """The services of the app handling the current request."""
    found: Services = current_app.extensions["packagerepo"]
    return found


def celery() -> Celery:
    """The Celery app bound to this API's settings (used to send tasks only)."""
    app: Celery = current_app.extensions["celery"]
    return app
