"""The dashboard's pages over real Redis (the machine's server and the embedded one).

Every test builds the deployment the workers would use (``config.Settings``
with its own key prefix, a file store in a temp dir), writes trackers and
events through the real manager and the real activity records, and reads
the pages over HTTP with Starlette's test client.
"""

from __future__ import annotations

import base64
import html as html_module
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from celery_app import activity, handlers, runtime
from celery_app.outbox import drain
from config.settings import Settings
from dashboard.app import create_app
from dashboard.auth import ExposureError
from dashboard.server import check_exposure
from dashboard.source import Source
from tests.support.redis_fixtures import delete_prefix, redis_client
from tracking import (
    AccumulationTracker,
    CountLimiter,
    CountTracker,
    KeyValueEQ,
    ResetPeriod,
    TimeLimiter,
)
from tracking.factory import manager_from_settings
from tracking.manager import TrackingManager

pytestmark = pytest.mark.redis

HANDLERS = [
    "tests.support.celery_handlers:record_every_event",
    "tests.support.celery_handlers:grant_reward",
]
EVERY = "tests.support.celery_handlers:record_every_event"
REWARD = "tests.support.celery_handlers:grant_reward"


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    handlers.unregister_all()
    yield
    handlers.unregister_all()


@pytest.fixture
def settings(redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        redis_url=redis_url,
        key_prefix=redis_prefix,
        store_url=f"file://{tmp_path / 'store'}",
        event_handlers=HANDLERS,
    )


@pytest.fixture
def manager(settings: Settings) -> Iterator[TrackingManager]:
    m = manager_from_settings(settings)
    yield m
    m.data_cache.close()
    m.data_store.close()


@pytest.fixture
def source(settings: Settings) -> Iterator[Source]:
    s = Source(settings, flower_url="http://127.0.0.1:5555")
    yield s
    s.close()


@pytest.fixture
def client(settings: Settings, source: Source) -> TestClient:
    return TestClient(create_app(settings, source=source))


@pytest.fixture
def service(settings: Settings) -> Iterator[None]:
    """The worker-side runtime (activity records) on these settings."""
    runtime.use_settings(settings)
    yield
    runtime.use_settings(None)


def _publish_all(manager: TrackingManager) -> None:
    """What beat's drain does, minus the broker: hand every outbox entry on and record it."""
    drain(manager, lambda handler, event: None, record=activity.record_fired)


def _rate_counts(settings: Settings) -> dict[str, int]:
    """Totals per kind (``t`` tracked, ``c`` completed) in this and the last hour's hash."""
    r = redis_client(settings.redis_url or "")
    hour = int(time.time() // 3600)
    totals: dict[str, int] = {}
    for h in (hour - 1, hour):
        for field, value in r.hgetall(activity.rate_key(settings.key_prefix, h)).items():
            kind = field.decode().split(":")[0]
            totals[kind] = totals.get(kind, 0) + int(value)
    r.close()
    return totals


def _text(html: str) -> str:
    return html_module.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def test_group_page_shows_trackers_stages_limiters_periods_and_flags(
    manager: TrackingManager, client: TestClient
) -> None:
    manager.add_tracker(
        "user-42",
        CountTracker(
            "paid-orders", [KeyValueEQ("status", "paid")], [2, 5], limiters=[CountLimiter(10)]
        ),
    )
    manager.add_tracker(
        "user-42",
        AccumulationTracker(
            "spend",
            [KeyValueEQ("status", "paid")],
            1000,
            "amount",
            reset_period=ResetPeriod("day", at="06:00", timezone="Europe/Berlin"),
        ),
    )
    manager.add_tracker(
        "user-42",
        CountTracker(
            "daily-cap",
            [KeyValueEQ("status", "paid")],
            100,
            limiters=[CountLimiter(1)],
        ),
        expire_at=int(time.time()) + 3600,
    )
    manager.add_tracker(
        "user-42",
        CountTracker(
            "windowed",
            [KeyValueEQ("kind", "x")],
            3,
            limiters=[TimeLimiter(start_ts=int(time.time()) - 60, interval=timedelta(hours=1))],
        ),
    )
    for amount in (30, 40, 50):
        manager.track("user-42", {"status": "paid", "amount": amount})
    response = client.get("/groups/user-42")
    assert response.status_code == 200
    text = _text(response.text)
    assert "paid-orders" in text and "spend" in text and "daily-cap" in text
    assert 'counts events where status is "paid"' in text
    assert 'adds up amount of events where status is "paid"' in text
    # paid-orders: stage 1 (target 2) done, stage 2 current at 3 / 5
    assert re.search(r'class="stage done" title="stage 1: target 2"', response.text)
    assert re.search(r'class="stage current" title="stage 2: target 5"', response.text)
    assert "3 / 5" in text
    assert "120 / 1,000" in text
    assert "1 of 1 used" in text and "refusing events" in text
    assert "limited" in text
    assert "resets every day at 06:00 (Europe/Berlin)" in text and "next reset" in text
    assert "open now" in text
    assert "expires never" in text and re.search(r"expires \d{4}-\d\d-\d\d", text)
    # the events fired so far (ADDED x4, STAGE_COMPLETED, LIMITED) are waiting in the outbox
    assert text.count("in outbox") >= 6
    assert "STAGE_COMPLETED" in text and "LIMITED" in text


def test_group_page_reports_which_handlers_ran(
    manager: TrackingManager, client: TestClient, settings: Settings, service: None
) -> None:
    manager.add_tracker("u7", CountTracker("quest", [KeyValueEQ("k", 1)], 2))
    manager.track("u7", {"k": 1})
    manager.track("u7", {"k": 1})
    _publish_all(manager)
    page = client.app.state.source.group_page("u7")  # type: ignore[attr-defined]
    by_event = {e.event: e for e in page.events}
    assert set(by_event) == {"ADDED", "ALL_COMPLETED"}
    assert not any(e.pending for e in page.events)
    completed = by_event["ALL_COMPLETED"]
    assert [h.handler for h in completed.handlers] == [EVERY, REWARD]
    assert all(h.status == "not run yet" for h in completed.handlers)
    # the worker's done marker and claim (tasks.events.dispatch_event's keys)
    r = redis_client(settings.redis_url or "")
    r.set(runtime.service_key(settings.key_prefix, "ev-done", completed.event_id, REWARD), b"1")
    r.set(runtime.service_key(settings.key_prefix, "ev-claim", completed.event_id, EVERY), b"t")
    r.close()
    response = client.get("/groups/u7")
    assert response.status_code == 200
    row = next(part for part in response.text.split("<tr>") if completed.event_id in part)
    assert "ALL_COMPLETED" in row
    assert re.search(re.escape(REWARD) + r"</code>\s*<span[^>]*>done<", row)
    assert re.search(re.escape(EVERY) + r"</code>\s*<span[^>]*>running<", row)
    # the group left the cache's active set when its only tracker completed
    assert "event id" in response.text


def test_the_dashboard_uses_the_same_service_keys_as_the_worker(settings: Settings) -> None:
    """dispatch_event builds its done marker with runtime.key; the dashboard with service_key."""
    runtime.use_settings(settings)
    try:
        assert runtime.key("ev-done", "e1", "h") == runtime.service_key(
            settings.key_prefix, "ev-done", "e1", "h"
        )
    finally:
        runtime.use_settings(None)
    source = (Path(__file__).parents[2] / "tasks" / "events.py").read_text()
    assert 'runtime.key("ev-done", event_id, handler)' in source
    assert 'runtime.key("ev-claim", event_id, handler)' in source


def test_overview_counts_indexes_and_rates(
    manager: TrackingManager, client: TestClient, source: Source, service: None
) -> None:
    for i in range(5):
        manager.add_tracker(f"g{i}", CountTracker("t", [KeyValueEQ("k", 1)], 1))
    manager.track("g0", {"k": 1})
    activity.note_tracked(7, 2)
    activity.flush_counts()
    assert source.wait_for_count()
    response = client.get("/")
    assert response.status_code == 200
    text = _text(response.text)
    assert re.search(r"\b5 groups in the cache", text)
    assert re.search(r"\b7 events tracked in the last hour", text)
    assert re.search(r"\b2 trackers completed in the last hour", text)
    # five groups with ADDED (one also ALL_COMPLETED) events are waiting for the drain
    assert re.search(r"\b6 outbox depth", text)
    assert re.search(r"\b1 dirty groups", text)  # add_tracker writes the store itself
    assert 'href="http://127.0.0.1:5555"' in response.text
    assert EVERY in text
    manager.flush_dirty()
    _publish_all(manager)
    text = _text(client.get("/").text)
    assert re.search(r"\b0 dirty groups", text) and re.search(r"\b0 outbox depth", text)


def test_track_task_feeds_the_per_minute_counter(
    manager: TrackingManager, settings: Settings, service: None
) -> None:
    from tasks.tracking import track

    manager.add_tracker("rate", CountTracker("t", [KeyValueEQ("k", 1)], 100))
    track.apply(args=("rate", {"k": 1}))
    track.apply(args=("rate", {"k": 2}))
    activity.flush_counts()
    counts = _rate_counts(settings)
    assert counts == {"t": 2}


def test_search_redirects_and_unknown_or_bad_groups(
    client: TestClient, manager: TrackingManager
) -> None:
    response = client.get("/search", params={"group": " a/b?c "}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/groups/a%2Fb%3Fc"
    assert client.get("/search", follow_redirects=False).headers["location"] == "/"
    manager.add_tracker("a/b?c", CountTracker("t", [KeyValueEQ("k", 1)], 1))
    assert client.get("/groups/a%2Fb%3Fc").status_code == 200
    missing = client.get("/groups/nobody")
    assert missing.status_code == 404 and "neither in the cache nor in the store" in missing.text
    assert client.get("/groups/" + "x" * 300).status_code == 400


def test_group_not_in_the_cache_is_read_from_the_store(
    manager: TrackingManager, client: TestClient
) -> None:
    manager.add_tracker("cold", CountTracker("t", [KeyValueEQ("k", 1)], 4))
    manager.track("cold", {"k": 1})
    manager.flush_dirty()
    _publish_all(manager)
    assert manager.evict("cold")
    text = _text(client.get("/groups/cold").text)
    assert "read from the store" in text and "1 / 4" in text


def test_values_from_users_are_escaped(manager: TrackingManager, client: TestClient) -> None:
    evil = "<script>alert('x')</script>"
    group = '<img src=x onerror="alert(1)">'
    manager.add_tracker(group, CountTracker(evil, [KeyValueEQ("k", evil)], 1))
    response = client.get("/groups/" + group)
    assert response.status_code == 200
    assert "<script>alert" not in response.text
    assert "<img src=x" not in response.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in response.text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in response.text
    assert "<script" not in response.text  # the pages have no script at all
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_read_only_no_write_methods(client: TestClient) -> None:
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)("/groups/g").status_code == 405
        assert getattr(client, method)("/").status_code == 405


def _basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_token_is_required_when_configured(settings: Settings, source: Source) -> None:
    secured = settings.model_copy(update={"dashboard_token": "t0ken"})
    client = TestClient(create_app(secured, source=source))
    for path in ("/", "/groups/g", "/healthz", "/search?group=g"):
        refused = client.get(path, follow_redirects=False)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer t0ken"}).status_code == 200
    assert client.get("/", headers=_basic("me", "t0ken")).status_code == 200


def test_basic_auth_user_and_password(settings: Settings, source: Source) -> None:
    secured = settings.model_copy(update={"dashboard_user": "ops", "dashboard_password": "pa:ss"})
    client = TestClient(create_app(secured, source=source))
    assert client.get("/").status_code == 401
    assert client.get("/", headers=_basic("ops", "wrong")).status_code == 401
    assert client.get("/", headers=_basic("other", "pa:ss")).status_code == 401
    assert client.get("/", headers=_basic("ops", "pa:ss")).status_code == 200


def test_binding_beyond_loopback_needs_credentials() -> None:
    bare = Settings()
    check_exposure("127.0.0.1", bare)
    check_exposure("::1", bare)
    check_exposure("localhost", bare)
    for host in ("0.0.0.0", "::", "192.168.1.20"):
        with pytest.raises(ExposureError, match="TRACKING_DASHBOARD_TOKEN"):
            check_exposure(host, bare)
    check_exposure("0.0.0.0", Settings(dashboard_token="x"))
    check_exposure("0.0.0.0", Settings(dashboard_user="u", dashboard_password="p"))
    with pytest.raises(ExposureError):
        check_exposure("0.0.0.0", Settings(dashboard_user="u"))


class _Counting:
    """Counts the round trips a redis-py client makes (commands and pipelines)."""

    def __init__(self) -> None:
        self.calls = 0

    def wrap(self, client: Any) -> None:
        original_command = client.execute_command
        original_pipeline = client.pipeline
        counter = self

        def execute_command(*args: Any, **kwargs: Any) -> Any:
            counter.calls += 1
            return original_command(*args, **kwargs)

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = original_pipeline(*args, **kwargs)
            original_execute = pipe.execute

            def execute(*a: Any, **k: Any) -> Any:
                counter.calls += 1
                return original_execute(*a, **k)

            pipe.execute = execute
            return pipe

        client.execute_command = execute_command
        client.pipeline = pipeline


@pytest.fixture
def server_settings(server_redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    """The machine's Redis only: round trips are counted on one server's connections."""
    prefix = "t" + uuid.uuid4().hex[:8]
    yield Settings(
        data_dir=tmp_path,
        redis_url=server_redis_url,
        key_prefix=prefix,
        store_url=f"file://{tmp_path / 'store'}",
    )
    delete_prefix(server_redis_url, prefix)


def test_page_round_trips_do_not_grow_with_the_number_of_groups(
    server_settings: Settings,
) -> None:
    """The page-time property behind bench/dashboard_bench.py: a constant number of reads."""
    manager = manager_from_settings(server_settings)
    manager.add_tracker("probe", CountTracker("t", [KeyValueEQ("k", 1)], 10))
    cache = manager.data_cache
    installed = 0

    def round_trips(groups: int) -> tuple[int, int]:
        nonlocal installed
        for i in range(installed, groups):
            cache.install_group(f"bulk-{i}", [])
        installed = groups
        source = Source(server_settings)
        assert source.wait_for_count()  # the background count is not part of a page
        counting = _Counting()
        counting.wrap(source.cache._client)  # type: ignore[attr-defined]
        counting.wrap(source.client)
        source.group_page("probe")  # warms the definition cache
        counting.calls = 0
        source.group_page("probe")
        group_calls = counting.calls
        counting.calls = 0
        source.overview()
        overview_calls = counting.calls
        source.close()
        return group_calls, overview_calls

    try:
        small = round_trips(10)
        large = round_trips(2000)
    finally:
        manager.data_cache.close()
        manager.data_store.close()
    assert small == large
    assert small[0] <= 3 and small[1] <= 3


def test_without_handler_settings_the_page_says_handler_runs_are_unknown(
    manager: TrackingManager, settings: Settings
) -> None:
    bare = settings.model_copy(update={"event_handlers": []})
    source = Source(bare)
    try:
        manager.add_tracker("plain", CountTracker("t", [KeyValueEQ("k", 1)], 1))
        text = _text(TestClient(create_app(bare, source=source)).get("/groups/plain").text)
    finally:
        source.close()
    assert "No event handlers are registered in this process" in text
    assert "ADDED" in text


def test_a_pool_process_writes_its_last_counts_when_it_shuts_down(
    settings: Settings, service: None
) -> None:
    from celery_app.signals import _on_worker_process_shutdown

    activity.note_tracked(5, 1)
    _on_worker_process_shutdown(pid=None)
    counts = _rate_counts(settings)
    assert counts == {"t": 5, "c": 1}


def test_an_unreachable_redis_gives_a_503_page_not_a_traceback(tmp_path: Path) -> None:
    from tests.support.celery_env import free_port

    down = Settings(
        data_dir=tmp_path,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        store_url=f"file://{tmp_path / 'store'}",
    )
    source = Source(down)
    try:
        client = TestClient(create_app(down, source=source), raise_server_exceptions=False)
        for path in ("/groups/g", "/"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert "Backend unavailable" in response.text
    finally:
        source.close()
