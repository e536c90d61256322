"""Provision and run the Mongo wire-compatible test server for the tests.

There is no MongoDB on the development and CI machines. The tests talk to
``mongoeco``, a MongoDB wire-protocol server written in Python, through the
real pymongo client. mongoeco needs Python >= 3.13 while the project runs
on 3.11, so the server lives in its own virtualenv (``tests/.mongo-venv``,
gitignored) and runs as a child process (``tests/support/mongo_server.py``).

This module is plain Python 3.11 (no pytest import) so both the pytest
fixture and ``.ci/mongo-setup.sh`` use it:

* :func:`find_python313` locates a working Python >= 3.13 at run time
  (never a hard-coded path);
* :func:`ensure_venv` creates or reuses the virtualenv with pinned versions;
* :class:`MongoTestServer` starts the launcher, waits for its URI and stops it.

It is a test server, not MongoDB: behaviour that needs a replica set
(retried writes, majority write concern across members) is not exercised.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

#: Versions checked to work together (see the shared notes on the test server).
MONGOECO_VERSION = "4.11.0"
PYMONGO_VERSION = "4.20.0"

#: Environment variable naming an explicit Python >= 3.13 interpreter.
PYTHON_ENV_VAR = "TRACKING_TEST_PYTHON313"

SUPPORT_DIR = Path(__file__).resolve().parent
TESTS_DIR = SUPPORT_DIR.parent
DEFAULT_VENV = TESTS_DIR / ".mongo-venv"
LAUNCHER = SUPPORT_DIR / "mongo_server.py"

_STAMP = "tracking-mongo-env.json"
_START_TIMEOUT = 30.0


class MongoEnvUnavailable(RuntimeError):
    """No Python >= 3.13 on this machine: the test server cannot run here."""


class MongoEnvError(RuntimeError):
    """The test server environment could not be built or the server failed to start."""


def _python_ok(candidate: str) -> bool:
    """True if ``candidate`` runs and is Python >= 3.13 (pyenv shims may exist but fail)."""
    try:
        result = subprocess.run(
            [candidate, "-c", "import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _pyenv_candidates() -> Iterator[str]:
    """Interpreters >= 3.13 known to pyenv, preferring 3.13.0 (the version checked)."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pyenv, "prefix", "3.13.0"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                yield str(Path(out.stdout.strip().splitlines()[0]) / "bin" / "python3")
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    versions = Path(root) / "versions"
    if versions.is_dir():
        for entry in sorted(versions.glob("3.1[3-9]*")):
            yield str(entry / "bin" / "python3")


def find_python313() -> str | None:
    """Path of a working Python >= 3.13, or None.

    Order: ``$TRACKING_TEST_PYTHON313``, pyenv (``pyenv prefix 3.13.0``, then
    ``$PYENV_ROOT/versions/3.13+``), then ``python3.13``/``python3.14`` on PATH.
    Each candidate is executed, because a pyenv shim on PATH may exist
    without a matching version being active.
    """
    explicit = os.environ.get(PYTHON_ENV_VAR)
    candidates: list[str] = [explicit] if explicit else []
    candidates.extend(_pyenv_candidates())
    for name in ("python3.13", "python3.14"):
        found = shutil.which(name)
        if found:
            candidates.append(found)
    seen: set[str] = set()
    for candidate in candidates:
        if candidate in seen:
            continue
        seen.add(candidate)
        if _python_ok(candidate):
            return candidate
    return None


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _stamp_matches(venv: Path) -> bool:
    try:
        data = json.loads((venv / _STAMP).read_text())
    except (OSError, ValueError):
        return False
    return bool(
        data == {"mongoeco": MONGOECO_VERSION, "pymongo": PYMONGO_VERSION}
        and _venv_python(venv).exists()
    )


def ensure_venv(venv: Path = DEFAULT_VENV, *, quiet: bool = True) -> Path:
    """Create or reuse the test-server virtualenv; return its Python.

    Idempotent and safe to call from concurrent test runs: a file lock
    serialises creation, and a stamp file records the pinned versions so a
    half-built or outdated venv is rebuilt rather than trusted.

    Raises :class:`MongoEnvUnavailable` if no Python >= 3.13 exists and
    :class:`MongoEnvError` if creating the venv or installing fails.
    """
    venv = venv.resolve()
    if _stamp_matches(venv):
        return _venv_python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / (venv.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _stamp_matches(venv):  # another process built it while we waited
                return _venv_python(venv)
            python = find_python313()
            if python is None:
                raise MongoEnvUnavailable(
                    "the Mongo wire-compatible test server (mongoeco) needs Python >= 3.13; "
                    f"none found (tried ${PYTHON_ENV_VAR}, pyenv, python3.13 on PATH)"
                )
            if venv.exists():
                shutil.rmtree(venv)
            pip_quiet = ["-q"] if quiet else []
            steps = [
                [python, "-m", "venv", str(venv)],
                [
                    str(_venv_python(venv)),
                    "-m",
                    "pip",
                    "install",
                    *pip_quiet,
                    "--disable-pip-version-check",
                    f"mongoeco=={MONGOECO_VERSION}",
                    f"pymongo=={PYMONGO_VERSION}",
                ],
            ]
            for step in steps:
                result = subprocess.run(step, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    raise MongoEnvError(
                        f"building the test-server venv failed: {' '.join(step)}\n"
                        f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
                    )
            (venv / _STAMP).write_text(
                json.dumps({"mongoeco": MONGOECO_VERSION, "pymongo": PYMONGO_VERSION})
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _venv_python(venv)


class MongoTestServer:
    """One running Mongo wire-compatible test server (a child process).

    The child exits when we close its stdin, on SIGTERM, or when this
    process dies (parent-death signal), so it never outlives the test run.
    """

    def __init__(
        self,
        python: Path | str | None = None,
        *,
        engine: str = "memory",
        sqlite_path: Path | str | None = None,
        port: int = 0,
    ) -> None:
        self._python = str(python) if python is not None else None
        self._engine = engine
        self._sqlite_path = str(sqlite_path) if sqlite_path is not None else None
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self.uri: str | None = None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = _START_TIMEOUT) -> str:
        """Start the server and return its ``mongodb://`` URI once it listens."""
        if self.running:
            assert self.uri is not None
            return self.uri
        python = self._python or str(ensure_venv())
        cmd = [python, str(LAUNCHER), "--engine", self._engine, "--port", str(self._port)]
        if self._sqlite_path is not None:
            cmd += ["--sqlite-path", self._sqlite_path]
        # stderr goes to a file, not a pipe: a chatty server must never block on
        # a full pipe nobody reads; we read the file only to explain a failure.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self._proc = proc
        line: list[bytes] = []
        # readline() blocks; read it in a thread so a hung child cannot hang the tests.
        reader = threading.Thread(
            target=lambda: line.append(proc.stdout.readline() if proc.stdout else b""),
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        if not line or not line[0]:
            stderr = self._stderr_text()
            self.stop()
            raise MongoEnvError(
                f"the Mongo test server did not report a URI within {timeout:.0f}s "
                f"(exit code {proc.returncode}):\n{stderr[-4000:]}"
            )
        try:
            self.uri = str(json.loads(line[0])["uri"])
        except (ValueError, KeyError) as exc:
            self.stop()
            raise MongoEnvError(f"unexpected launcher output: {line[0]!r}") from exc
        return self.uri

    def _stderr_text(self) -> str:
        """What the child wrote to stderr so far (for error messages)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: close stdin, then SIGTERM, then SIGKILL if it lingers."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                if proc.stdin:
                    proc.stdin.close()
            try:
                proc.wait(timeout / 2)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout / 2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for stream in (proc.stdin, proc.stdout, self._stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._proc = None
        self._stderr = None

    def __enter__(self) -> MongoTestServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m tests.support.mongo_env [--check]`` builds the venv (for CI).

    Exit code 0 when ready, 2 when no Python >= 3.13 exists, 1 on other failures.
    With ``--check`` also start the server once and print its URI.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        python = ensure_venv()
        if "--check" in args:
            with MongoTestServer(python) as server:
                print(server.uri)
    except MongoEnvUnavailable as exc:
        print(f"mongo test env: {exc}", file=sys.stderr)
        return 2
    except MongoEnvError as exc:
        print(f"mongo test env: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
