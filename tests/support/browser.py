"""Debian's headless chromium for the browser tests (Flower, the dashboard).

``chromium()`` finds the binary, installing it with ``.ci/chromium-setup.sh``
when missing; ``chromium_args()`` are the flags every run uses (no sandbox:
the tests run as root; no network side traffic; a private profile).
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
