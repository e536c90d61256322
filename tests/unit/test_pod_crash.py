"""Crash safety of POD syncs: SIGKILL a writer mid-sync, then the POD must load cleanly.

Each round starts a child that keeps rewriting, deleting and re-adding
values of a POD and syncing, kills it with SIGKILL at a random moment (it is
nearly always inside a sync, which is where the fsyncs are), and reopens the
POD. Every value carries a checksum over its content, so a torn file, a
half-written value or a mix of two versions inside one value is detected.
Rounds reuse the same directories, so damage would accumulate and show.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracking.pod import POD

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 30
KEYS = 40

CHILD = textwrap.dedent(
    """
    import hashlib, json, random, sys
    from tracking.pod import POD

    def checksum(key, gen, payload):
        raw = json.dumps([key, gen, payload], sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()

    path, gzipped, keys, seed = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    pod = POD(path, gzipped=gzipped, file_size=7, sync_at=10**9)
    gen = max((v["gen"] for v in pod.values()), default=0)
    announced = False
    while True:
        gen += 1
        for i in rng.sample(range(keys), keys // 2):
            key = f"k{i}"
            if key in pod and rng.random() < 0.2:
                del pod[key]  # sometimes delete and re-add: the key moves to a new slot
                if rng.random() < 0.5:
                    continue
            payload = [rng.randrange(10**9) for _ in range(rng.randrange(1, 60))]
            pod[key] = {"key": key, "gen": gen, "payload": payload,
                        "sum": checksum(key, gen, payload)}
        pod.sync()
        if not announced:
            print("ready", flush=True)
            announced = True
    """
)


def checksum(key: str, gen: int, payload: list[int]) -> str:
    """Same checksum as the child computes."""
    raw = json.dumps([key, gen, payload], sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()


def verify(pod: POD) -> None:
    """Every value must be one complete version written by the child."""
    for key, value in pod.items():
        assert isinstance(value, dict), (key, value)
        assert value["key"] == key
        assert value["sum"] == checksum(key, value["gen"], value["payload"]), key


def kill_mid_sync(path: Path, gzipped: bool, rng: random.Random) -> None:
    """Run the writer child and SIGKILL it at a random moment after its first sync."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    args = [str(path), "1" if gzipped else "0", str(KEYS), str(rng.randrange(10**6))]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            child.wait(timeout=10)
            stderr = child.stderr.read() if child.stderr else ""
            pytest.fail(f"writer child failed to start: {line!r} {stderr}")
        time.sleep(rng.uniform(0.0, 0.12))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.timeout(120)
def test_sigkill_mid_sync_never_leaves_torn_data(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    seen_gens: dict[bool, int] = {False: 0, True: 0}
    for round_no in range(ROUNDS):
        gzipped = round_no % 2 == 1
        path = tmp_path / ("gz" if gzipped else "plain")
        kill_mid_sync(path, gzipped, rng)
        pod = POD(path, gzipped=gzipped, file_size=7)
        assert len(pod) > 0
        verify(pod)
        newest = max(value["gen"] for value in pod.values())
        # progress is durable: a finished sync is never lost by a later crash
        assert newest >= seen_gens[gzipped]
        seen_gens[gzipped] = newest
        leftovers = [n for n in os.listdir(path) if n.endswith(".tmp")]
        assert leftovers == [], leftovers  # dead writer's debris removed on open
        del pod
    # the writers did make progress across rounds (one announced sync per round at least)
    assert seen_gens[False] >= ROUNDS // 2 and seen_gens[True] >= ROUNDS // 2
