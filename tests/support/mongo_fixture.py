"""Pytest plugin: a Mongo wire-compatible test server for ``@pytest.mark.mongo`` tests.

Register it from ``tests/conftest.py`` with
``pytest_plugins = ["tests.support.mongo_fixture"]``.

Fixtures:

* ``mongo_url`` (session): the server URL. ``$TRACKING_TEST_MONGO_URL`` wins
  (a real MongoDB or a server someone else runs; nothing is started).
  Otherwise a mongoeco server is started once per session in its own
  Python >= 3.13 venv (``tests/.mongo-venv``). Without Python 3.13 the
  tests are skipped with the reason, except when ``$CI`` is set: CI must
  run them, so there the fixture fails instead.
* ``mongo_server`` (session): the :class:`MongoTestServer` we started, or
  None when the URL came from the environment (tests that stop a server
  start their own instead).
* ``mongo_private_server`` (function): a separate server for tests that
  stop or break it (started even when ``$TRACKING_TEST_MONGO_URL`` is set).
* ``mongo_db_name`` (function): a fresh database name per test; the test's
  database is dropped afterwards, and nothing else is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest

from tests.support.mongo_env import (
    MongoEnvError,
    MongoEnvUnavailable,
    MongoTestServer,
    ensure_venv,
)

URL_ENV_VAR = "TRACKING_TEST_MONGO_URL"


def _unavailable(reason: str) -> NoReturn:
    """Skip locally, fail in CI (where the Mongo tests are mandatory)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the Mongo tests must run, but: {reason}", pytrace=False)
    pytest.skip(reason)


def _venv_python() -> str:
    """The test-server venv's Python, or skip/fail (see :func:`_unavailable`)."""
    try:
        return str(ensure_venv())
    except MongoEnvUnavailable as exc:
        _unavailable(str(exc))
    except MongoEnvError as exc:
        pytest.fail(str(exc), pytrace=False)


def _started(python: str) -> MongoTestServer:
    server = MongoTestServer(python)
    try:
        server.start()
    except MongoEnvError as exc:
        pytest.fail(str(exc), pytrace=False)
    return server


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoTestServer | None]:
    """The test server started for this session; None if ``$TRACKING_TEST_MONGO_URL`` is set."""
    if os.environ.get(URL_ENV_VAR):
        yield None
        return
    server = _started(_venv_python())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mongo_private_server() -> Iterator[MongoTestServer]:
    """A test server of this test's own, which the test may stop."""
    server = _started(_venv_python())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_url(mongo_server: MongoTestServer | None) -> str:
    """URL of the Mongo server the tests use (from the environment or the session server)."""
    if mongo_server is None:
        return os.environ[URL_ENV_VAR]
    assert mongo_server.uri is not None
    return mongo_server.uri


@pytest.fixture
def mongo_db_name(mongo_url: str) -> Iterator[str]:
    """A database name unique to this test; that database alone is dropped afterwards."""
    name = f"tracking_test_{uuid.uuid4().hex[:16]}"
    yield name
    import pymongo
    import pymongo.errors

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        mongo_url, serverSelectionTimeoutMS=5000
    )
    try:
        client.drop_database(name)
    except pymongo.errors.PyMongoError:
        pass  # the server may have been stopped on purpose by the test
    finally:
        client.close()
