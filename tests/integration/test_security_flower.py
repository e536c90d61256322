"""``tracking flower`` started as users start it: the API stays closed without credentials."""

from __future__ import annotations

import base64
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.celery_env import deployment, free_port, port_open, require, wait_until

pytestmark = [pytest.mark.redis]


def _status(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_tracking_flower_api_needs_auth_even_with_an_inherited_open_api(tmp_path: Path) -> None:
    require("embedded")
    with deployment("embedded", tmp_path) as dep:
        plain, with_auth = free_port(), free_port()
        env = {"FLOWER_UNAUTHENTICATED_API": "true"}  # inherited: must not open the API
        dep.start("flower", [sys.executable, "-m", "cli.main", "flower", f"--port={plain}"], env)
        dep.start(
            "flower-auth",
            [
                sys.executable,
                "-m",
                "cli.main",
                "flower",
                f"--port={with_auth}",
                "--basic-auth=ops:s3cret",
            ],
            env,
        )
        for port in (plain, with_auth):
            wait_until(lambda p=port: port_open("127.0.0.1", p), 90, f"Flower on {port}")
        assert _status(f"http://127.0.0.1:{plain}/api/workers") == 401
        base = f"http://127.0.0.1:{with_auth}"
        assert _status(f"{base}/api/workers") == 401
        assert _status(f"{base}/api/workers", "ops:wrong") == 401
        assert _status(f"{base}/api/workers", "ops:s3cret") == 200
        assert _status(f"{base}/", None) == 401  # basic auth guards the UI too
