"""Run the ``tracking`` command line as a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.celery_env import REPO


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """``python -m cli.main ARGS`` with only the ``TRACKING_*`` variables of ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKING_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        check=False,
        env={**clean, "PYTHONPATH": str(REPO), "COLUMNS": "120", **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
