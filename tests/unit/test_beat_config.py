"""Which beat scheduler the Celery configuration names (``TRACKING_BEAT_SCHEDULER``).

The failover itself runs in ``tests/integration/test_beat_failover.py``.
"""

from __future__ import annotations

import importlib.util

import pytest

from celery_app.celeryconfig import beat_config, build_config
from config.settings import Settings
from tracking.errors import MissingDependencyError, TrackingValueError

REDIS = "redis://127.0.0.1:6379/3"


def test_the_default_is_celery_beats_own_file_scheduler() -> None:
    config = build_config(Settings(broker_url="memory://"))
    assert config["beat_scheduler"] == "celery.beat:PersistentScheduler"
    assert config["redbeat_redis_url"] is None


def test_redbeat_keeps_its_lock_in_the_cache_redis_under_the_key_prefix() -> None:
    settings = Settings(
        redis_url=REDIS, key_prefix="app", beat_scheduler="redbeat", beat_lock_timeout_seconds=30
    )
    config = beat_config(settings)
    assert config["beat_scheduler"] == "redbeat.RedBeatScheduler"
    assert config["redbeat_redis_url"] == REDIS
    assert config["redbeat_key_prefix"] == "app:redbeat:"
    assert config["redbeat_lock_timeout"] == 30
    # the standby polls, and the active beat renews, well within the lock's lifetime
    assert 1 <= config["beat_max_loop_interval"] <= 30 / 3


def test_redbeat_refuses_a_cluster_cache() -> None:
    settings = Settings(redis_url="redis+cluster://127.0.0.1:7000", beat_scheduler="redbeat")
    with pytest.raises(TrackingValueError, match="TRACKING_BEAT_SCHEDULER"):
        beat_config(settings)


def test_redbeat_without_the_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "redbeat" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match="celery-redbeat"):
        beat_config(Settings(redis_url=REDIS, beat_scheduler="redbeat"))
