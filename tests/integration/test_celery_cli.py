"""The ``tracking`` command line, run as a subprocess like a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_app import configure, runtime
from tests.support.celery_env import REPO, Deployment, deployment, wait_until
from tracking import CountTracker, KeyValueEQ

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Any:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKING_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        check=False,
        env={**clean, "PYTHONPATH": str(REPO), "COLUMNS": "120", **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with deployment("embedded", tmp_path) as d:
        configure(d.settings)
        yield d


def test_demo_runs_with_no_configuration(tmp_path: Path) -> None:
    result = _cli("demo", "--events", "200", env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Trackers after the stream" in result.stdout
    assert "earned the logins badge" in result.stdout
    assert "(no duplicates)" in result.stdout
    assert not list(tmp_path.glob("tracking-demo-*")), "the demo left its data directory"


def test_add_show_remove_against_a_deployment(dep: Deployment) -> None:
    spec = {
        "type": "CountTracker",
        "name": "logins",
        "conditions": [{"type": "KeyValueEQ", "key": "kind", "value": "login"}],
        "target": [3, 10],
    }
    added = _cli("add", "u1", json.dumps(spec), env=dep.env)
    assert added.returncode == 0, added.stderr
    shown = _cli("show", "u1", "--json", env=dep.env)
    assert json.loads(shown.stdout)[0]["name"] == "logins"
    bad = _cli("add", "u1", '{"type": "Nope"}', env=dep.env)
    assert bad.returncode == 2 and "Nope" in bad.stderr
    removed = _cli("remove", "u1", "logins", env=dep.env)
    assert "removed logins" in removed.stdout
    assert json.loads(_cli("show", "u1", "--json", env=dep.env).stdout) == []


def test_replay_is_resumable_and_counts_once(dep: Deployment, tmp_path: Path) -> None:
    runtime.get_manager().add_tracker(
        "r1", CountTracker("hits", [KeyValueEQ("kind", "hit")], 10**6)
    )
    log = tmp_path / "events.jsonl"
    lines = [json.dumps({"group_id": "r1", "data": {"kind": "hit"}}) for _ in range(45)]
    log.write_text("\n".join([*lines, "not json"]) + "\n")

    dry = _cli("replay", str(log), "--dry-run", env=dep.env)
    assert dry.returncode == 1 and "45 valid" in dry.stdout and "1 invalid" in dry.stdout
    assert not Path(f"{log}.progress").exists()

    dep.start_worker()
    first = _cli("replay", str(log), "--batch", "10", env=dep.env)
    assert "45 sent" in first.stdout, first.stdout + first.stderr
    again = _cli("replay", str(log), "--batch", "10", env=dep.env)
    assert "0 sent, 46 already done" in again.stdout, again.stdout  # lines, the bad one too
    # A rerun with other batch boundaries re-sends, and the event ids dedupe it.
    regrouped = _cli("replay", str(log), "--batch", "7", env=dep.env)
    assert "45 sent" in regrouped.stdout

    def progress() -> float:
        return runtime.get_manager().get_trackers("r1")[0].progress

    wait_until(lambda: progress() == 45, 60, "the replayed events")
    # 5 batches of 10, then 7 batches of 7: all twelve ran, yet 45 counted.
    wait_until(
        lambda: dep.log("w1").count("succeeded") >= 12,
        60,
        "the worker to process the re-sent batches",
    )
    assert progress() == 45
