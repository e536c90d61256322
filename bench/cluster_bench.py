"""Redis Cluster vs one Redis server: warm events/s of one client, in the same run.

Run from the repository root::

    .venv/bin/python bench/cluster_bench.py            # ~14 minutes
    .venv/bin/python bench/cluster_bench.py --quick    # smaller counts

One client thread calls ``TrackingManager.track`` (conditions evaluated in
Python, one apply script per event) on groups of 10 count trackers that all
match the event, so every event steps 10 trackers. Two scenarios:

* ``hot``: one group gets every event;
* ``many``: 10,000 groups (``--groups``) get events round-robin.

Each backend runs each scenario ``--repeats`` times, alternating standalone
and cluster so that the machine's background load hits both alike:

* ``standalone``: the machine's Redis (``--redis-url``, default
  ``redis://127.0.0.1:6379/0``) under a random key prefix, deleted after;
* ``cluster``: a local cluster of six ``redis-server`` processes (three
  primaries, one replica each) started for the run on free ports and
  stopped at its end (``tests/support/redis_cluster.py``);
* ``private``: a standalone ``redis-server`` of the same binary started for
  the run on a free port (no persistence, like the cluster's nodes), since
  the machine's Redis also serves other test runs;
* ``private-replica``: another such server with a replica of its own
  (``--replicaof``), so that both sides replicate every write: on this
  machine the replicas share the client's and the primaries' cores, so
  this is the like-for-like baseline for a cluster with replicas;
* ``cluster-no-replicas``: a local cluster of three primaries and no
  replica: the cluster's own cost, replication left out;
* ``cluster-evalsha`` (hot scenario only): the cluster with the scripts
  called by EVALSHA instead of Redis Functions (FCALL).

Every run ends with an exact-count check (each tracker's progress equals
the events its group got) and a short counted pass: client round trips per
event (sends on the hot connection for one server, writes to the nodes for
a cluster). Groups are installed in the cache directly (the store is not
on the measured path) and get one untimed warm-up event each. Results:
``bench/results/cluster.json`` with the load average at start and end (the
machine is shared: compare the ratios within one run, not absolute rates).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support.redis_cluster

from tests.support.redis_cluster import LocalCluster  # noqa: E402
from tracking import CountTracker, FileDataStore, KeyValueEQ, TrackingManager  # noqa: E402
from tracking.cache.base import CachedTracker  # noqa: E402
from tracking.cache.redis import RedisDataCache  # noqa: E402

TRACKERS = 10
TARGET = 10**9


def _definitions() -> list[Any]:
    return [
        CountTracker(f"t{i}", [KeyValueEQ("kind", "hit")], TARGET).definition
        for i in range(TRACKERS)
    ]


def _install(cache: RedisDataCache, groups: list[str]) -> None:
    for group in groups:
        trackers = [CachedTracker(d, d.initial_state()) for d in _definitions()]
        assert cache.install_group(group, trackers)


class _Counter:
    """Counts client round trips: hot-connection sends (one server) or node writes (cluster)."""

    def __init__(self, cache: RedisDataCache) -> None:
        self.cache, self.count = cache, 0

    def __enter__(self) -> _Counter:
        cache = self.cache
        if cache._router is not None:
            real_send = cache._router._send

            def send(batches: Any) -> Any:
                self.count += 1
                return real_send(batches)

            real_one = cache._router.run_packed

            def one(*args: Any) -> Any:
                self.count += 1
                return real_one(*args)

            cache._router._send = send  # type: ignore[method-assign]
            cache._router.run_packed = one  # type: ignore[method-assign]
        else:
            real_hot = cache._hot_script

            def hot(*args: Any) -> Any:
                self.count += 1
                return real_hot(*args)

            cache._hot_script = hot  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        cache = self.cache
        if cache._router is not None:
            del cache._router._send
            del cache._router.run_packed
        else:
            del cache._hot_script


def _start_private(replica_of: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """A standalone redis-server of our own on a free port (stopped by the caller).

    With ``replica_of`` (a port), a replica of that server, returned once its
    link to the primary is up.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    extra = () if replica_of is None else ("--replicaof", "127.0.0.1", str(replica_of))
    proc = subprocess.Popen(
        [
            "redis-server",
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
            # Replication straight over the socket on both ends: no dump.rdb
            # is written into the working directory.
            *("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"),
            *("--repl-diskless-load", "on-empty-db"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            client = redis.Redis.from_url(url)
            if replica_of is None and client.ping():
                return url, proc
            if replica_of is not None and client.info("replication")["master_link_status"] == "up":
                return url, proc
        except (redis.RedisError, KeyError):
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"redis-server on port {port} did not come up")
        time.sleep(0.05)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


def run_once(url: str, scenario: str, events: int, groups: int, evalsha: bool) -> dict[str, Any]:
    prefix = "bc" + uuid.uuid4().hex[:8]
    cache = RedisDataCache(url, prefix)
    if evalsha:
        cache._functions = False
    store_dir = tempfile.mkdtemp(prefix="cluster-bench-store-")
    manager = TrackingManager(cache, FileDataStore(store_dir))
    try:
        ids = ["hot"] if scenario == "hot" else [f"g{i}" for i in range(groups)]
        _install(cache, ids)
        sent = dict.fromkeys(ids, 0)
        data = {"kind": "hit"}
        for group in ids:  # warm-up: the manager learns the definitions
            manager.track(group, data, event_id=f"w-{group}")
            sent[group] += 1
        order = [ids[i % len(ids)] for i in range(events)]
        start = time.perf_counter()
        for i, group in enumerate(order):
            manager.track(group, data, event_id=f"e{i}")
        elapsed = time.perf_counter() - start
        for group in order:
            sent[group] += 1
        counted = min(200, events)
        with _Counter(cache) as counter:
            for i in range(counted):
                manager.track(order[i], data, event_id=f"c{i}")
                sent[order[i]] += 1
        exact = True
        for group in ids:
            got = cache.get_group(group)
            assert got is not None
            progress = {t.state.progress for t in got.trackers.values()}
            exact = exact and progress == {sent[group]} and len(got.trackers) == TRACKERS
        return {
            "events": events,
            "seconds": round(elapsed, 4),
            "events_per_s": round(events / elapsed, 1),
            "round_trips_per_event": round(counter.count / counted, 3),
            "exact_counts": exact,
        }
    finally:
        cache.flush()
        cache.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--hot-events", type=int, default=5_000)
    parser.add_argument("--many-events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "cluster.json"))
    args = parser.parse_args()
    if args.quick:
        args.groups, args.hot_events, args.many_events, args.repeats = 1000, 1000, 2000, 1
    load_start = os.getloadavg()
    cluster = LocalCluster().start()
    bare_cluster = LocalCluster(replicas=0).start()
    private = _start_private()
    replicated = _start_private()
    replica = _start_private(replica_of=_port(replicated[0]))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        backends = [
            ("standalone", args.redis_url, False),
            ("private", private[0], False),
            ("private-replica", replicated[0], False),
            ("cluster", cluster.url, False),
            ("cluster-no-replicas", bare_cluster.url, False),
        ]
        plan = [("hot", args.hot_events, [*backends, ("cluster-evalsha", cluster.url, True)])]
        plan.append(("many", args.many_events, backends))
        for scenario, events, sides in plan:
            for _ in range(args.repeats):
                for name, url, evalsha in sides:
                    one = run_once(url, scenario, events, args.groups, evalsha)
                    results.setdefault(scenario, {}).setdefault(name, []).append(one)
                    print(scenario, name, one, flush=True)
    finally:
        cluster.stop()
        bare_cluster.stop()
        for _, proc in (private, replica, replicated):
            proc.terminate()
            proc.wait(timeout=30)
    summary: dict[str, Any] = {}
    for scenario, sides in results.items():
        medians = {
            n: statistics.median(r["events_per_s"] for r in runs) for n, runs in sides.items()
        }
        summary[scenario] = {
            "median_events_per_s": medians,
            "cluster_over_standalone": round(medians["cluster"] / medians["standalone"], 3),
            "cluster_over_private": round(medians["cluster"] / medians["private"], 3),
            # Like for like: both sides replicate every write to one replica
            # (on the same cores here).
            "cluster_over_private_with_replica": round(
                medians["cluster"] / medians["private-replica"], 3
            ),
            # The cluster's own cost, replication left out on both sides.
            "cluster_without_replicas_over_private": round(
                medians["cluster-no-replicas"] / medians["private"], 3
            ),
            "all_exact": all(r["exact_counts"] for runs in sides.values() for r in runs),
        }
        if "cluster-evalsha" in medians:
            summary[scenario]["evalsha_over_fcall_on_cluster"] = round(
                medians["cluster-evalsha"] / medians["cluster"], 3
            )
    report = {
        "what": "one client thread, TrackingManager.track, 10 count trackers per group all "
        "stepped by each event; standalone Redis vs a local 3-primary cluster in one run",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "parameters": {
            "trackers_per_group": TRACKERS,
            "groups_many": args.groups,
            "hot_events": args.hot_events,
            "many_events": args.many_events,
            "repeats": args.repeats,
        },
        "summary": summary,
        "runs": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
