"""Debian's headless chromium for the browser tests (Flower, the dashboard).

``chromium()`` finds the binary, installing it with ``.ci/chromium-setup.sh``
when missing; ``chromium_args()`` are the flags every run uses (no sandbox:
the tests run as root; no network side traffic; a private profile);
``dump_dom()`` and ``screenshot()`` run it once each.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        subprocess.run(["bash", str(REPO / ".ci" / "chromium-setup.sh")], check=True, timeout=900)
        found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found is not None, "chromium is missing and .ci/chromium-setup.sh did not install it"
    return found


def chromium_args(profile: Path, window: str = "1400,900") -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        "--virtual-time-budget=10000",
    ]


def dump_dom(browser: str, profile: Path, url: str) -> str:
    """The page's DOM after its scripts ran, as chromium serialises it."""
    return subprocess.run(
        [browser, *chromium_args(profile), "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def screenshot(browser: str, profile: Path, url: str, out: Path, window: str = "1400,900") -> bytes:
    """Render ``url`` into the PNG ``out``; returns its bytes (checked to be a real PNG)."""
    subprocess.run(
        [browser, *chromium_args(profile, window), f"--screenshot={out}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    return data
