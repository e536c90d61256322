"""The ``tracking`` command line, run as a subprocess like a user would."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from tests.support.celery_env import Deployment, deployment, wait_until
from tests.support.cli_run import run_cli
from tracking import CountTracker, KeyValueEQ

pytestmark = [pytest.mark.redis, pytest.mark.slow]


_cli = run_cli


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with deployment("embedded", tmp_path) as d:
        configure(d.settings)
        yield d


def _user_dirs(tmp_path: Path) -> dict[str, Path]:
    """Empty stand-ins for a user's working, home, data and temp directories."""
    dirs = {name: tmp_path / name for name in ("cwd", "home", "tmp")}
    for path in dirs.values():
        path.mkdir()
    return dirs


def _user_env(dirs: dict[str, Path]) -> dict[str, str]:
    home = dirs["home"]
    return {"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "TMPDIR": str(dirs["tmp"])}


def test_demo_runs_with_no_configuration_and_touches_nothing_else(tmp_path: Path) -> None:
    # Only its own directory under the temp dir: no ./.tracking-data, nothing
    # in the user data dir (where a second embedded server would have put its
    # files). It keeps that directory for tracking dashboard; the next run
    # starts from an empty one, and --clean leaves nothing at all.
    dirs = _user_dirs(tmp_path)
    result = _cli("demo", "--events", "200", env=_user_env(dirs), cwd=dirs["cwd"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Trackers after the stream" in result.stdout
    assert "earned the logins badge" in result.stdout
    assert "(no duplicates)" in result.stdout
    kept = dirs["tmp"] / f"celery-tracking-demo-{os.getuid()}"
    assert list(dirs["tmp"].iterdir()) == [kept]
    assert (kept / "tracking-demo.json").is_file()
    (kept / "left-over").write_text("from the first run")
    again = _cli("demo", "--events", "50", "--clean", env=_user_env(dirs), cwd=dirs["cwd"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(no duplicates)" in again.stdout
    for name, path in dirs.items():
        assert list(path.iterdir()) == [], f"the demo left files in {name}"


def test_demo_refuses_a_directory_that_is_not_a_demo(tmp_path: Path) -> None:
    dirs = _user_dirs(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = _cli("demo", "--data-dir", str(mine), env=_user_env(dirs), cwd=dirs["cwd"])
    assert result.returncode == 6, result.stdout + result.stderr
    assert "is not empty and holds no earlier demo" in result.stderr
    assert (mine / "notes.txt").read_text() == "keep me"


def test_show_from_another_folder_reads_the_same_data(tmp_path: Path) -> None:
    # No TRACKING_DATA_DIR: the default is the user's data directory, found
    # from any working directory; show names the Redis and store it read.
    dirs = _user_dirs(tmp_path)
    env = _user_env(dirs)
    spec = {
        "type": "CountTracker",
        "name": "logins",
        "conditions": [{"type": "KeyValueEQ", "key": "kind", "value": "login"}],
        "target": 3,
    }
    added = _cli("add", "u1", json.dumps(spec), env=env, cwd=dirs["cwd"])
    assert added.returncode == 0, added.stdout + added.stderr
    shown = _cli("show", "u1", env=env, cwd=dirs["tmp"])
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "u1: 1 tracker(s)" in shown.stdout
    data_dir = dirs["home"] / "data" / "celery-tracking"
    assert f"(embedded, data dir {data_dir})" in shown.stdout
    assert f"store file://{data_dir / 'store'}" in shown.stdout
    assert list(dirs["cwd"].iterdir()) == []


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
    assert bad.returncode == 4 and "Nope" in bad.stderr
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
    assert dry.returncode == 1 and "45 valid, 1 invalid" in dry.stdout
    assert not Path(f"{log}.progress").exists()

    dep.start_worker()
    first = _cli("replay", str(log), "--batch", "10", env=dep.env)
    assert "45 sent, 0 already sent, 1 invalid" in first.stdout, first.stdout + first.stderr
    again = _cli("replay", str(log), "--batch", "10", env=dep.env)
    assert "0 sent, 45 already sent, 1 invalid" in again.stdout, again.stdout
    # The bad line is reported the same way, with the same exit code, on every run.
    assert first.returncode == again.returncode == dry.returncode == 1
    assert first.stderr.strip().splitlines()[-1] == again.stderr.strip().splitlines()[-1]
    assert again.stderr.strip().splitlines()[-1].startswith("invalid line 46: not JSON")
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
