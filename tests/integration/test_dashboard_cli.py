"""``tracking dashboard`` as people run it: after ``tracking demo``, in a real browser.

Runs ``tracking demo`` (the embedded default: its own Redis, worker and
beat, no configuration) for a user with empty home, data and temp
directories, then plain ``tracking dashboard`` as a subprocess with no
``TRACKING_*`` setting at all, checks that it shows the demo's groups over
HTTP (and says they are the demo's), and renders the group page and the
overview in Debian's headless chromium. The screenshots are written to the
test's temp dir; set
``TRACKING_DASHBOARD_SCREENSHOTS`` to a directory (e.g. ``docs``) to keep
``dashboard-group.png`` and ``dashboard-overview.png`` there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import chromium, dump_dom, screenshot
from tests.support.celery_env import free_port, wait_until

pytestmark = [pytest.mark.slow]

BIN = Path(sys.executable).parent / "tracking"


def _env(**extra: str) -> dict[str, str]:
    """This environment without any TRACKING_* setting: the zero-configuration default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKING_")}
    env.update(extra)
    return env


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def user_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A user with empty home, data and temp directories and no TRACKING_* settings."""
    root = tmp_path_factory.mktemp("user")
    for name in ("home", "tmp"):
        (root / name).mkdir()
    return _env(
        HOME=str(root / "home"), XDG_DATA_HOME=str(root / "home" / "data"), TMPDIR=str(root / "tmp")
    )


@pytest.fixture(scope="module")
def demo_dir(user_env: dict[str, str]) -> Path:
    done = subprocess.run(
        [str(BIN), "demo", "--events", "120"],
        env={**user_env, "COLUMNS": "400"},  # wide enough that rich does not fold the path
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = Path(user_env["TMPDIR"]) / f"celery-tracking-demo-{os.getuid()}"
    flat = " ".join(done.stdout.split())  # rich wraps long lines
    assert f"data kept in {data} until the next demo" in flat
    assert "browse its groups: tracking dashboard (http" in flat  # plain: no flags needed
    return data


@pytest.fixture(scope="module")
def dashboard(demo_dir: Path, user_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    log = demo_dir.parent / "dashboard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN), "dashboard", "--port", str(port)],
            env=user_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _get(f"{base}/healthz")[0] == 200 or proc.poll() is not None,
            120,
            "the dashboard to answer",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert "Showing the last tracking demo run" in log.read_text()


def test_dashboard_serves_the_demo_groups(dashboard: str) -> None:
    status, html = _get(f"{dashboard}/groups/alice")
    assert status == 200
    for name in ("logins", "big-spender", "shares"):
        assert name in html
    assert "cli.demo:remember" in html and ">done<" in html
    assert "Showing the last tracking demo run" in html
    status, html = _get(f"{dashboard}/")
    assert status == 200
    assert "groups in the cache" in html and "events tracked in the last hour" in html
    # The demo's groups are found from the home page, not only by typing an id.
    active = html.split("Groups with recent events", 1)[1].split("<h2>", 1)[0]
    for group in ("alice", "bob", "carol"):
        assert f'href="/groups/{group}"' in active
    status, html = _get(f"{dashboard}/groups/nobody")
    assert status == 404


def test_group_and_overview_pages_in_headless_chromium(dashboard: str, tmp_path: Path) -> None:
    browser = chromium()
    url = f"{dashboard}/groups/alice"
    dom = dump_dom(browser, tmp_path / "profile-dom", url)
    assert "big-spender" in dom and 'class="stage current"' in dom
    keep = os.environ.get("TRACKING_DASHBOARD_SCREENSHOTS")
    for page, name, window in (
        (url, "dashboard-group.png", "1280,1400"),
        (f"{dashboard}/", "dashboard-overview.png", "1280,1000"),
    ):
        shot = tmp_path / name
        screenshot(browser, tmp_path / f"profile-{name}", page, shot, window)
        if keep:
            shutil.copyfile(shot, Path(keep) / name)


def test_refuses_a_public_address_without_credentials() -> None:
    done = subprocess.run(
        [str(BIN), "dashboard", "--host", "0.0.0.0", "--port", str(free_port())],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "TRACKING_DASHBOARD_TOKEN" in done.stderr


def test_token_protects_a_running_dashboard(demo_dir: Path) -> None:
    # --data-dir of a demo's directory: its key prefix and handlers come from its marker.
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN), "dashboard", "--port", str(port), "--data-dir", str(demo_dir)],
        env=_env(TRACKING_DASHBOARD_TOKEN="s3cret"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: _get(f"{base}/healthz")[0] in (200, 401) or proc.poll() is not None,
            120,
            "the dashboard to answer",
        )
        assert _get(f"{base}/groups/alice")[0] == 401
        status, html = _get(f"{base}/groups/alice", {"Authorization": "Bearer s3cret"})
        assert status == 200 and "logins" in html
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
