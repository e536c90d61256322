"""Which data ``tracking dashboard`` shows (cli/browse.py) and the demo's own directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli import browse
from cli import demo as demo_files


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A user with no TRACKING_* settings, an empty data dir and a fixed demo dir."""
    for name in list(os.environ):
        if name.upper().startswith("TRACKING_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    last = tmp_path / "tmp" / "celery-tracking-demo-1000"
    monkeypatch.setattr(demo_files, "last_demo_dir", lambda: last)
    return {"data": tmp_path / "data" / "celery-tracking", "demo": last}


def _ran_demo(root: Path) -> None:
    demo_files.prepare_demo_dir(root, shared_tmp=False)


def _own_group(data_dir: Path) -> None:
    records = data_dir / "store" / "records"
    records.mkdir(parents=True)
    (records / "_pod_meta.json").write_text("{}")
    (records / "0.json").write_text(json.dumps({"u1\x1flogins": {}}))


def test_no_configuration_and_no_own_groups_shows_the_last_demo(user: dict[str, Path]) -> None:
    _ran_demo(user["demo"])
    target = browse.choose(demo=False, data_dir=None, key_prefix=None, environ={})
    assert target.settings.data_dir == user["demo"]
    assert target.settings.key_prefix == demo_files.KEY_PREFIX
    assert target.settings.event_handlers == demo_files.HANDLERS
    assert target.notice is not None and user["demo"].name in target.notice


def test_own_groups_win_over_the_demo(user: dict[str, Path]) -> None:
    _ran_demo(user["demo"])
    _own_group(user["data"])
    target = browse.choose(demo=False, data_dir=None, key_prefix=None, environ={})
    assert target.settings.data_dir == user["data"]
    assert target.settings.key_prefix != demo_files.KEY_PREFIX
    assert target.notice is None
    # ... and --demo still shows the demo, whatever the shell exports.
    demo = browse.choose(
        demo=True, data_dir=None, key_prefix=None, environ={"TRACKING_REDIS_URL": "redis://x"}
    )
    assert demo.settings.data_dir == user["demo"] and demo.settings.redis_url is None


@pytest.mark.parametrize("variable", browse.LOCATION_VARIABLES)
def test_any_location_setting_means_configured(
    user: dict[str, Path], variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ran_demo(user["demo"])
    target = browse.choose(demo=False, data_dir=None, key_prefix=None, environ={variable: "x"})
    assert target.settings.data_dir != user["demo"] and target.notice is None


def test_no_demo_means_the_configured_settings(user: dict[str, Path]) -> None:
    target = browse.choose(demo=False, data_dir=None, key_prefix=None, environ={})
    assert target.settings.data_dir == user["data"] and target.notice is None
    with pytest.raises(browse.NoDemoError, match="run tracking demo first"):
        browse.choose(demo=True, data_dir=None, key_prefix=None, environ={})


def test_data_dir_of_a_demo_reads_its_marker(user: dict[str, Path], tmp_path: Path) -> None:
    kept = tmp_path / "kept-demo"
    _ran_demo(kept)
    target = browse.choose(demo=False, data_dir=kept, key_prefix=None, environ={})
    assert (target.settings.data_dir, target.settings.key_prefix) == (kept, "demo")
    other = browse.choose(demo=False, data_dir=kept, key_prefix="mine", environ={})
    assert other.settings.key_prefix == "mine"
    plain = browse.choose(demo=False, data_dir=tmp_path / "plain", key_prefix=None, environ={})
    assert plain.settings.key_prefix != "demo" and plain.notice is None


def test_an_earlier_demo_is_emptied_anything_else_refused(tmp_path: Path) -> None:
    root = tmp_path / "d"
    demo_files.prepare_demo_dir(root, shared_tmp=True)
    assert (root.stat().st_mode & 0o777) == 0o700
    (root / "old.rdb").write_text("x")
    demo_files.prepare_demo_dir(root, shared_tmp=True)
    assert sorted(p.name for p in root.iterdir()) == [demo_files.MARKER_FILE]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(demo_files.DemoDirError, match="holds no earlier demo"):
        demo_files.prepare_demo_dir(mine, shared_tmp=False)
    assert (mine / "notes.txt").read_text() == "keep"


def test_the_shared_temp_dir_must_be_private_and_real(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(demo_files.DemoDirError, match="symlink"):
        demo_files.prepare_demo_dir(link, shared_tmp=True)
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    with pytest.raises(demo_files.DemoDirError, match="open to others"):
        demo_files.prepare_demo_dir(open_dir, shared_tmp=True)
    assert list(target.iterdir()) == []


def test_a_broken_marker_is_no_demo(tmp_path: Path) -> None:
    (tmp_path / demo_files.MARKER_FILE).write_text("[1, 2")
    assert demo_files.read_marker(tmp_path) is None
    (tmp_path / demo_files.MARKER_FILE).write_text('{"key_prefix": 3}')
    assert demo_files.read_marker(tmp_path) is None


def test_show_points_at_the_demo_for_a_demo_group(user: dict[str, Path]) -> None:
    from cli.admin import _demo_hint

    assert _demo_hint("alice") is None  # no demo ran
    _ran_demo(user["demo"])
    hint = _demo_hint("alice")
    assert hint is not None
    assert f"TRACKING_DATA_DIR={user['demo']} TRACKING_KEY_PREFIX=demo tracking show alice" in hint
    assert _demo_hint("user-42") is None  # not a demo group
