"""``tracking add|show|reset|remove|replay`` as a user meets them: errors, reset, help.

Every failure an operator can cause or meet is one line on stderr starting
with ``error:`` and a distinct exit code (the table in ``cli/errors.py`` and
the README); ``reset`` clears what a person means and shows before/after.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_app import configure, runtime
from cli.errors import ExitCode
from tests.support.celery_env import Deployment, deployment
from tests.support.cli_run import run_cli
from tracking import CountLimiter, CountTracker, KeyValueEQ

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SPEC = {
    "type": "CountTracker",
    "name": "spend",
    "conditions": [{"type": "KeyValueEQ", "key": "kind", "value": "buy"}],
    "target": [2, 10],
}


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    with deployment("embedded", tmp_path) as d:
        configure(d.settings)
        yield d


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one_error_line(result: subprocess.CompletedProcess[str], code: ExitCode, text: str) -> None:
    out = f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode == code, out
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("error: ") and text in lines[0], out
    assert "Traceback" not in result.stderr


def test_every_error_is_one_line_with_its_exit_code(dep: Deployment, tmp_path: Path) -> None:
    env = dep.env
    _one_error_line(
        run_cli("add", "user-7", f"@{tmp_path / 'missing.json'}", env=env),
        ExitCode.NO_FILE,
        "missing.json",
    )
    _one_error_line(run_cli("add", "user-7", "{bad", env=env), ExitCode.BAD_INPUT, "not JSON")
    _one_error_line(
        run_cli("add", "user-7", '{"type": "Nope"}', env=env), ExitCode.BAD_INPUT, "Nope"
    )
    _one_error_line(run_cli("reset", "nobody", env=env), ExitCode.NOT_FOUND, "no trackers")
    _one_error_line(run_cli("remove", "nobody", "x", env=env), ExitCode.NOT_FOUND, "no trackers")

    assert run_cli("add", "user-7", json.dumps(SPEC), env=env).returncode == 0
    _one_error_line(
        run_cli("add", "user-7", json.dumps(SPEC), env=env), ExitCode.CONFLICT, "already exists"
    )
    for command in ("reset", "remove"):
        _one_error_line(
            run_cli(command, "user-7", "nope", env=env),
            ExitCode.NOT_FOUND,
            "no tracker named 'nope' in group 'user-7'",
        )
    _one_error_line(
        run_cli("replay", str(tmp_path / "none.jsonl"), env=env), ExitCode.NO_FILE, "none.jsonl"
    )

    port = _closed_port()
    no_redis = {**env, "TRACKING_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    _one_error_line(run_cli("show", "user-7", env=no_redis), ExitCode.UNAVAILABLE, "cannot reach")
    log = tmp_path / "events.jsonl"
    log.write_text(json.dumps({"group_id": "user-7", "data": {"kind": "buy"}}) + "\n")
    no_broker = {**env, "TRACKING_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
    result = run_cli("replay", str(log), env=no_broker)
    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot reach")
    assert "Traceback" not in result.stderr


def test_reset_defaults_to_progress_limiters_and_first_stage(dep: Deployment) -> None:
    manager = runtime.get_manager()
    tracker = CountTracker(
        "spend", [KeyValueEQ("kind", "buy")], [2, 10], limiters=[CountLimiter(3)], reset_policy=0
    )
    manager.add_tracker("user-7", tracker)
    for _ in range(4):  # stage 1 done at 2; the limiter admits 3, refuses the 4th
        manager.track("user-7", {"kind": "buy"})
    before = manager.get_trackers("user-7", "spend")[0]
    assert (before.state.stage, before.progress, before.limited) == (1, 3, True)

    result = run_cli("reset", "user-7", "spend", env=dep.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "reset spend in user-7: stage 2/2, progress 3/10, limited "
        "-> stage 1/2, progress 0/2, open" in result.stdout
    )
    after = manager.get_trackers("user-7", "spend")[0]
    assert (after.state.stage, after.progress, after.limited) == (0, 0, False)
    assert after.limiters[0].remaining == 3

    # dictrack's policies by name keep the stage; --clear names the parts.
    for _ in range(3):
        manager.track("user-7", {"kind": "buy"})
    kept = run_cli("reset", "user-7", "spend", "--policy", "PROGRESS", env=dep.env)
    assert kept.returncode == 0, kept.stderr
    state = manager.get_trackers("user-7", "spend")[0]
    assert (state.state.stage, state.progress, state.limited) == (1, 0, True)
    limiter_only = run_cli("reset", "user-7", "--clear", "limiter", env=dep.env)
    assert "-> stage 2/2, progress 0/10, open" in limiter_only.stdout, limiter_only.stdout
    bad = run_cli("reset", "user-7", "--clear", "everything", env=dep.env)
    assert bad.returncode == ExitCode.USAGE and "everything" in bad.stderr


def test_help_renders_plainly_within_the_terminal_width() -> None:
    top = run_cli("--help", env={"COLUMNS": "80"})
    assert top.returncode == 0
    assert "<bool>" not in top.stdout
    for code in ExitCode:
        assert f"{int(code):>4}  " in top.stdout
    replay = run_cli("replay", "--help", env={"COLUMNS": "80"})
    assert replay.returncode == 0
    assert '{"group_id": "user-42", "data": {"kind": "login"}, "event_id": "ev-991"}' in (
        replay.stdout
    )
    for raw_rest in (":class:", "``", "<bool>"):
        assert raw_rest not in replay.stdout
    assert "--progress-dir DIR" in replay.stdout
    assert max(len(line) for line in replay.stdout.splitlines()) <= 80
    reset = run_cli("reset", "--help", env={"COLUMNS": "80"})
    assert "--clear WHAT" in reset.stdout and "--policy" in reset.stdout
