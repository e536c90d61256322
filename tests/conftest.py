"""Shared test configuration: hypothesis profiles and the server fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.support.mongo_fixture", "tests.support.redis_fixtures"]

settings.register_profile(
    "ci",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


_own_data_dir: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Keep the suite out of the user's data directory (the default data dir).

    Anything that falls back to the default settings (a subprocess without
    its own ``TRACKING_DATA_DIR``) writes into one temporary directory per
    run instead of the developer's real embedded Redis and file store.
    """
    if not os.environ.get("TRACKING_DATA_DIR"):
        path = tempfile.mkdtemp(prefix="tracking-tests-")
        _own_data_dir.append(path)
        os.environ["TRACKING_DATA_DIR"] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    while _own_data_dir:
        shutil.rmtree(_own_data_dir.pop(), ignore_errors=True)
