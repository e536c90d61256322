"""Importing the product costs nothing: no server started or attached, no file written.

A web process imports ``tasks`` to call ``track.delay``; a tool imports
``celery_app.celeryconfig`` to read the queue names. Neither may start an
embedded redis-server (or connect to one) until Celery first reads its
configuration. Checked in a fresh interpreter that imports every module of
every package, with the embedded defaults (no URLs) and empty directories.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tracking", "config", "celery_app", "tasks", "cli", "dashboard")

IMPORT_ALL = r"""
import importlib, json, os, pkgutil, sys
from pathlib import Path

names = []
for package in sys.argv[1:]:
    if not Path(package).is_dir():
        continue
    module = importlib.import_module(package)
    names.append(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        names.append(info.name)

me = str(os.getpid())
children = []
for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
        fields = stat.read_text().rpartition(")")[2].split()
    except OSError:
        continue
    if fields[1] == me:
        children.append(stat.parent.name)
embedded = sys.modules.get("tracking.embedded.server")
owned = [str(p) for p in getattr(embedded, "_OWNED", {})]
print(json.dumps({"modules": names, "children": children, "owned": owned}))
"""


def _redis_servers_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            raw = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "redis-server" in raw and text in raw:
            found.append(raw)
    return found


def test_importing_every_module_starts_and_writes_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    temp = tmp_path / "tmp"  # where a long-path socket directory would go
    temp.mkdir()
    home = tmp_path / "home"  # where a per-user default directory would go
    home.mkdir()
    env = {
        **os.environ,
        "TRACKING_DATA_DIR": str(data_dir),
        "TRACKING_REDIS_URL": "",
        "TRACKING_BROKER_URL": "",
        "TRACKING_STORE_URL": "",
        "TMPDIR": str(temp),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, *PACKAGES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"tasks", "celery_app.celeryconfig", "cli.main"} <= set(report["modules"])
    assert report["children"] == [], "an import started a child process"
    assert report["owned"] == [], "an import started an embedded Redis"
    assert list(data_dir.iterdir()) == []
    assert list(temp.iterdir()) == []
    assert list(home.iterdir()) == []
    assert _redis_servers_mentioning(str(tmp_path)) == []


def test_config_keys_match_the_built_config() -> None:
    # The lazy module answers exactly the names build_config returns.
    from celery_app import celeryconfig
    from config.settings import Settings

    built = celeryconfig.build_config(Settings(broker_url="memory://"))
    assert set(built) == celeryconfig.CONFIG_KEYS
    assert set(celeryconfig.CONFIG_KEYS) <= set(dir(celeryconfig))
