"""Settings read from environment variables, in one frozen dataclass.

The README's configuration table lists the same variables; keep them in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything the API and the workers read from the environment."""

    env: str = "development"
    redis_url: str = "redis://127.0.0.1:6379/0"
    data_dir: Path = Path("./data")
    jwt_secret: str = ""
    jwt_issuer: str = "packagerepo"
    jwt_ttl_seconds: int = 3600
    admin_password: str = ""
    max_body_bytes: int = 1024 * 1024
    max_upload_bytes: int = 2 * 1024**3
    max_wait_seconds: int = 30
    tenant_max_running: int = 4
    tenant_submit_rate: str = "50/second"
    anonymous_submit_rate: str = "5/second"
    login_rate: str = "10/minute"
    allow_anon_read: bool = False
    lease_seconds: int = 30
    max_attempts: int = 3
    webhook_secret: str = ""
    webhook_allowlist: tuple[str, ...] = field(default_factory=tuple)
    webhook_allow_loopback: bool = False
    webhook_max_attempts: int = 5
    webhook_backoff_seconds: float = 2.0
    sse_max_streams: int = 16
    sse_max_seconds: int = 300
    worker_max_memory_mib: int = 1024
    log_format: str = "text"
    log_level: str = "INFO"

    @property
    def development(self) -> bool:
        return self.env == "development"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get("PACKAGEREPO_ENV", "development")
        allowlist = os.environ.get("WEBHOOK_ALLOWLIST", "")
        return cls(
            env=env,
            redis_url=os.environ.get("REDIS_URL", cls.redis_url),
            data_dir=Path(os.environ.get("DATA_DIR", "./data")).resolve(),
            jwt_secret=os.environ.get("JWT_SECRET", ""),
            jwt_issuer=os.environ.get("JWT_ISSUER", cls.jwt_issuer),
            jwt_ttl_seconds=_int("JWT_TTL_SECONDS", cls.jwt_ttl_seconds),
            admin_password=os.environ.get("ADMIN_PASSWORD", ""),
            max_body_bytes=_int("MAX_BODY_BYTES", cls.max_body_bytes),
            max_upload_bytes=_int("MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_wait_seconds=_int("MAX_WAIT_SECONDS", cls.max_wait_seconds),
            tenant_max_running=_int("TENANT_MAX_RUNNING", cls.tenant_max_running),
            tenant_submit_rate=os.environ.get(
                "TENANT_SUBMIT_RATE", cls.tenant_submit_rate
            ),
            anonymous_submit_rate=os.environ.get(
                "ANONYMOUS_SUBMIT_RATE", cls.anonymous_submit_rate
            ),
            login_rate=os.environ.get("LOGIN_RATE", cls.login_rate),
            allow_anon_read=_bool("ALLOW_ANON_READ", False),
            lease_seconds=_int("LEASE_SECONDS", cls.lease_seconds),
            max_attempts=_int("MAX_ATTEMPTS", cls.max_attempts),
            webhook_secret=os.environ.get("WEBHOOK_SECRET", ""),
            webhook_allowlist=tuple(
                host.strip().lower() for host in allowlist.split(",") if host.strip()
            ),
            webhook_allow_loopback=_bool("WEBHOOK_ALLOW_LOOPBACK", False),
            webhook_max_attempts=_int("WEBHOOK_MAX_ATTEMPTS", cls.webhook_max_attempts),
            webhook_backoff_seconds=float(
                os.environ.get("WEBHOOK_BACKOFF_SECONDS", cls.webhook_backoff_seconds)
            ),
            # Half of each API process's threads may hold event streams.
            sse_max_streams=_int(
                "SSE_MAX_STREAMS", max(1, _int("API_THREADS", 32) // 2)
            ),
            sse_max_seconds=_int("SSE_MAX_SECONDS", cls.sse_max_seconds),
            worker_max_memory_mib=_int(
                "WORKER_MAX_MEMORY_MIB", cls.worker_max_memory_mib
            ),
            log_format=os.environ.get("LOG_FORMAT", "text"),
            log_level=os.environ.get("LOG_LEVEL", "INFO"),
        )
