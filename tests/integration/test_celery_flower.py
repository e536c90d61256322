"""Flower against the same broker: its HTTP API and its tasks page in a real browser.

Starts a worker and Flower (``FLOWER_UNAUTHENTICATED_API=true``, bound to
127.0.0.1) on an isolated deployment, sends ``track`` tasks, and checks
that Flower lists the worker and the tasks; then Debian's chromium,
headless, renders the tasks page: the DOM must show ``tasks.track`` rows
and the screenshot is written (``TRACKING_FLOWER_SCREENSHOT`` names a copy
to keep, e.g. ``docs/flower-tasks.png``).

Chromium is installed by ``.ci/chromium-setup.sh`` when missing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_app import configure, runtime
from cli.procs import celery_command
from tasks import noop, track
from tests.support.browser import chromium, dump_dom, screenshot
from tests.support.celery_env import (
    Deployment,
    available,
    deployment,
    free_port,
    wait_until,
)
from tracking import CountTracker, KeyValueEQ

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def flower(tmp_path: Path) -> Iterator[tuple[Deployment, str]]:
    reason = available("redis")
    kind = "redis" if reason is None else "embedded"
    with deployment(kind, tmp_path) as dep:
        configure(dep.settings)
        dep.start_worker()
        port = free_port()
        dep.start(
            "flower",
            celery_command("flower", f"--port={port}", "--address=127.0.0.1"),
            env={"FLOWER_UNAUTHENTICATED_API": "true"},
        )
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _get(f"{base}/healthcheck") == "OK", 60, "Flower to answer")
        # Task events are broadcast (pub/sub): Flower only sees those sent after
        # its receiver subscribed. Send probes until it shows one.
        wait_until(lambda: _probe_seen(base), 60, "Flower to receive task events")
        yield dep, base


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
    except OSError:
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return body


def _probe_seen(base: str) -> bool:
    task_id = noop.delay().id
    for _ in range(10):
        if task_id in (_get(f"{base}/api/tasks?taskname=tasks.noop") or {}):
            return True
        time.sleep(0.1)
    return False


def _send_tracks(count: int) -> list[str]:
    runtime.get_manager().add_tracker(
        "flower-user", CountTracker("clicks", [KeyValueEQ("k", 1)], 10**6)
    )
    return [track.delay("flower-user", {"k": 1}).id for _ in range(count)]


def test_flower_api_lists_worker_and_track_tasks(flower: tuple[Deployment, str]) -> None:
    dep, base = flower
    ids = _send_tracks(20)
    workers = wait_until(lambda: _get(f"{base}/api/workers?refresh=1"), 60, "Flower's worker list")
    assert any(dep.prefix in name for name in workers)

    def tasks() -> dict[str, Any] | None:
        listed = _get(f"{base}/api/tasks?taskname=tasks.track&limit=1000")
        if isinstance(listed, dict) and set(ids) <= set(listed):
            return listed
        return None

    listed = wait_until(tasks, 60, "Flower to list the track tasks")
    assert all(listed[i]["name"] == "tasks.track" for i in ids)
    assert wait_until(
        lambda: all(
            (_get(f"{base}/api/task/info/{i}") or {}).get("state") == "SUCCESS" for i in ids
        ),
        60,
        "the tasks to be SUCCESS in Flower",
    )


def test_flower_tasks_page_in_headless_chromium(
    flower: tuple[Deployment, str], tmp_path: Path
) -> None:
    _, base = flower
    browser = chromium()
    ids = _send_tracks(12)
    wait_until(
        lambda: set(ids) <= set(_get(f"{base}/api/tasks?taskname=tasks.track") or {}),
        60,
        "Flower to record the tasks",
    )
    url = f"{base}/tasks"
    dom = dump_dom(browser, tmp_path / "profile-dom", url)
    assert "tasks.track" in dom
    shot = tmp_path / "flower-tasks.png"
    screenshot(browser, tmp_path / "profile-shot", url, shot)
    keep = os.environ.get("TRACKING_FLOWER_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
