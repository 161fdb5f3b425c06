"""The WSGI entry point for gunicorn: ``gunicorn api.wsgi:app``."""

from api import create_app
from packagerepo.config import Settings
from packagerepo.logs import configure_logging

_settings = Settings.from_env()
configure_logging(_settings.log_format, _settings.log_level)
app = create_app(_settings)
