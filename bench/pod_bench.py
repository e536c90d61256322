"""Benchmark: our POD (tracking.pod) against tastypy 0.0.3 on the same workload.

Run from the repository root::

    .venv/bin/python bench/pod_bench.py            # N = 10k and 100k
    .venv/bin/python bench/pod_bench.py --sizes 10000 --repeat 1

Workload, identical on both sides (POD operations only: tastypy 0.0.3
predates ``try_it`` and has no deletes), with ``file_size=1000`` and
``sync_at`` above N so only the explicit syncs write:

* ``add``: assign N keys ``k<i>`` -> ``{"_done": false, "_tries": 0, "i": i}``
* ``sync``: the first sync, writing all N values
* ``touch_sync``: ``pod[k]["_tries"] += 1`` on every 10th key, then sync
  (only the files holding those keys are dirty)
* ``load``: open the directory again in a fresh object (reads all files)

tastypy 0.0.3 is Python-2-only, so it runs under the machine's Python 2.7
(found with ``pyenv prefix 2.7.18`` or ``$PYENV_ROOT``) in a virtualenv this
script creates under ``bench/venvs/`` (git-ignored). Note the durability
difference: tastypy writes files in place with no fsync, ours writes every
file atomically with fsync (file and directory). Results go to
``bench/results/pod.json``; the best of ``--repeat`` runs is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / "venvs" / "tastypy-py27"
RESULTS = HERE / "results" / "pod.json"
FILE_SIZE = 1000
TASTYPY_PINS = ["tastypy==0.0.3", "natsort<7", "tblib<2"]

# Runs under Python 2.7 with tastypy; prints one JSON line of timings.
PY27_WORKLOAD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import tastypy
path, n, file_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
pod = tastypy.POD(path, file_size=file_size, sync_at=n + 10)
t = time.time()
for i in range(n):
    pod["k%d" % i] = {"_done": False, "_tries": 0, "i": i}
out["add"] = time.time() - t
t = time.time(); pod.sync(); out["sync"] = time.time() - t
t = time.time()
for i in range(0, n, 10):
    pod["k%d" % i]["_tries"] += 1
pod.sync()
out["touch_sync"] = time.time() - t
# 0.0.3 shares memory between PODs on one path and clone=False skips the
# read when one exists, so drop the shared state to force a real load.
tastypy.PersistentOrderedDict._SHARED_POD_STATE.clear()
t = time.time()
again = tastypy.POD(path, file_size=file_size)
out["load"] = time.time() - t
assert len(again) == n and again["k0"]["_tries"] == 1
print(json.dumps(out))
"""


def run_ours(path: Path, n: int) -> dict[str, float]:
    """The workload against tracking.pod, in this process."""
    sys.path.insert(0, str(ROOT))
    from tracking.pod import POD

    out: dict[str, float] = {}
    pod = POD(path, file_size=FILE_SIZE, sync_at=n + 10)
    t = time.perf_counter()
    for i in range(n):
        pod[f"k{i}"] = {"_done": False, "_tries": 0, "i": i}
    out["add"] = time.perf_counter() - t
    t = time.perf_counter()
    pod.sync()
    out["sync"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, n, 10):
        pod[f"k{i}"]["_tries"] += 1
    pod.sync()
    out["touch_sync"] = time.perf_counter() - t
    t = time.perf_counter()
    again = POD(path, file_size=FILE_SIZE)
    out["load"] = time.perf_counter() - t
    assert len(again) == n and again["k0"]["_tries"] == 1
    return out


def find_python27() -> Path | None:
    """The pyenv Python 2.7.18 interpreter, without assuming a home directory."""
    candidates: list[Path] = []
    pyenv = shutil.which("pyenv")
    if pyenv:
        done = subprocess.run(
            [pyenv, "prefix", "2.7.18"], capture_output=True, text=True, check=False
        )
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()) / "bin" / "python")
    if os.environ.get("PYENV_ROOT"):
        candidates.append(Path(os.environ["PYENV_ROOT"]) / "versions" / "2.7.18" / "bin" / "python")
    candidates.append(Path("~/.pyenv/versions/2.7.18/bin/python").expanduser())
    return next((c for c in candidates if c.exists()), None)


def ensure_py27_venv(log: list[str]) -> Path:
    """Create ``bench/venvs/tastypy-py27`` with tastypy 0.0.3; return its python.

    Python 2.7 has no ``venv`` module; ``virtualenv`` (< 20.22, the last
    line that runs on 2.7) is installed for the user if missing.
    """
    python = VENV / "bin" / "python"
    if python.exists():
        check = subprocess.run(
            [str(python), "-c", "import tastypy"], capture_output=True, check=False
        )
        if check.returncode == 0:
            return python
    py27 = find_python27()
    if py27 is None:
        raise RuntimeError("no Python 2.7.18 found (pyenv prefix 2.7.18 / $PYENV_ROOT)")
    log.append(f"python2.7: {py27}")

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        log.append("$ " + " ".join(cmd[1:] if cmd[0] == str(py27) else cmd))
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)

    if run([str(py27), "-m", "virtualenv", "--version"]).returncode != 0:
        done = run([str(py27), "-m", "pip", "install", "--user", "virtualenv<20.22"])
        if done.returncode != 0:
            raise RuntimeError(f"cannot install virtualenv for 2.7: {done.stderr[-2000:]}")
    shutil.rmtree(VENV, ignore_errors=True)
    done = run([str(py27), "-m", "virtualenv", "-q", str(VENV)])
    if done.returncode != 0:
        raise RuntimeError(f"virtualenv failed: {done.stderr[-2000:]}")
    done = run([str(python), "-m", "pip", "install", "-q", *TASTYPY_PINS])
    if done.returncode != 0:
        raise RuntimeError(f"pip install tastypy failed: {done.stderr[-2000:]}")
    return python


def run_tastypy(python: Path, path: Path, n: int) -> dict[str, float]:
    """The workload against tastypy 0.0.3 under Python 2.7, in a child process."""
    done = subprocess.run(
        [str(python), "-c", PY27_WORKLOAD, str(path), str(n), str(FILE_SIZE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tastypy run failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-phase minimum over runs (least disturbed by other load)."""
    return {phase: round(min(r[phase] for r in runs), 4) for phase in runs[0]}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def scrub(text: str) -> str:
    """Replace machine-specific absolute paths so the committed result is portable."""
    for path, alias in [
        (str(ROOT), "."),
        (tempfile.gettempdir(), "$TMPDIR"),
        (str(Path.home()), "~"),
    ]:
        text = text.replace(path, alias)
    return text


def main() -> None:
    """Run both sides for each size and write ``bench/results/pod.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    log: list[str] = []
    results: dict[str, Any] = {
        "benchmark": "POD add + sync + touch 10% + sync + reload",
        "file_size": FILE_SIZE,
        "repeat": args.repeat,
        "unit": "seconds (best of repeat)",
        "machine": machine_info(),
        "sizes": {},
        "notes": [
            "ours: atomic writes with fsync of each file and of the directory per sync",
            "tastypy 0.0.3: in-place writes, no fsync",
            "tmp dirs live on the file system of the system temp directory",
            "touch_sync touches every 10th key, so every data file is dirty (a full rewrite)",
            "tastypy load: shared per-path state cleared first (0.0.3 clone=False skips reads)",
        ],
    }
    try:
        py27: Path | None = ensure_py27_venv(log)
        version = subprocess.run(
            [str(py27), "-c", "import sys, tastypy; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            check=True,
        )
        results["tastypy"] = {"version": "0.0.3", "python": version.stdout.strip()}
    except Exception as exc:  # reported in the results, not fatal for our side
        py27 = None
        results["tastypy"] = {"error": f"{type(exc).__name__}: {exc}"}
    results["setup_log"] = log

    for n in args.sizes:
        entry: dict[str, Any] = {}
        ours, theirs = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="podbench-") as tmp:
                ours.append(run_ours(Path(tmp) / "ours", n))
                if py27 is not None:
                    theirs.append(run_tastypy(py27, Path(tmp) / "tastypy", n))
        entry["tracking.pod"] = best(ours)
        if theirs:
            entry["tastypy-0.0.3-py27"] = best(theirs)
            entry["ratio_ours_over_tastypy"] = {
                phase: round(
                    entry["tracking.pod"][phase] / max(entry["tastypy-0.0.3-py27"][phase], 1e-9), 2
                )
                for phase in entry["tracking.pod"]
            }
        results["sizes"][str(n)] = entry
        print(json.dumps({str(n): entry}, indent=1))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(scrub(json.dumps(results, indent=2)) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
