"""Engine benchmark: this product's Redis engine against dictrack 2.1.5 on the same Redis.

Run from the repository root::

    .venv/bin/python bench/engine_bench.py            # full run (a few minutes)
    .venv/bin/python bench/engine_bench.py --quick    # 1-2 minutes, 1,000 groups
    .venv/bin/python bench/engine_bench.py --redis-url redis://host:6379

What one run measures, for both engines, on one Redis server:

* warm events: events/s and per-event latency (p50/p90/p99/max) for
  1, 10 and 50 trackers per group x 1 and 10,000 groups x 1 and 2 worker
  processes, each cell bounded by ``--duration`` seconds; plus a variant in
  which every event completes a stage of every tracker (target 5 with
  ``loop_forever``: progress carries over, so from the 5th event on each
  event completes the repeated last stage and fires an event);
* Redis round trips per event, counted on the client (each redis-py request
  written and awaited; a pipeline is one) and, from ``INFO commandstats``
  deltas on the server, calls per event by command (for us: EVALSHA/EVAL and
  the commands our Lua script runs, which Redis counts too);
* Redis memory per tracker: ``MEMORY USAGE`` summed over every key the run
  created, divided by groups x trackers, plus the ``used_memory`` delta;
* the cold first event of a group that is only in the store: round trips,
  store reads and time (for us also the first event of a group that is in
  Redis but not in the worker's definitions cache).

Isolation on a shared server: our engine writes to db ``--ours-db`` (14) and
dictrack to db ``--dictrack-db`` (15). Both must be empty when the run starts
(checked; the run refuses otherwise), every key carries a random per-run
prefix, and cleanup deletes only keys containing that prefix, never
``FLUSHDB``/``FLUSHALL``. ``INFO commandstats`` is server-wide, so other
clients of the same server inflate it; the client-side counts are exact.

dictrack runs in its own virtualenv ``bench/venvs/dictrack`` (created here
with ``pip install "dictrack[redis]==2.1.5"``: its ``RedisDataCache`` imports
``redis_lock``, which only the ``redis`` extra installs) through
``bench/dictrack_worker.py``; the product never imports dictrack. Our side runs
in this interpreter through ``--worker``. Results go to
``bench/results/engine.json`` and ``bench/results/engine.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from roundtrips import RoundTripCounter  # bench/ is on sys.path: run as a script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / "venvs" / "dictrack"
DICTRACK_PINS = ["dictrack[redis]==2.1.5"]
DICTRACK_WORKER = HERE / "dictrack_worker.py"
RESULTS_JSON = HERE / "results" / "engine.json"
RESULTS_PNG = HERE / "results" / "engine.png"

#: Target high enough that no tracker completes during a run.
NEVER = 10**12
EVENT: dict[str, Any] = {"status": "active", "amount": 3}
#: Matches no tracker: warms a worker (connection, scripts, definitions).
WARMUP_EVENT: dict[str, Any] = {"status": "idle", "amount": 0}
ENGINES = ("ours", "dictrack")


COUNTER = RoundTripCounter()


# --------------------------------------------------------------------------
# Our engine's worker (runs as ``engine_bench.py --worker '<json>'``).
# --------------------------------------------------------------------------
def _import_product() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def redis_cache_available() -> bool:
    """Whether ``tracking.cache.redis.RedisDataCache`` can be imported here."""
    _import_product()
    try:
        from tracking.cache.redis import RedisDataCache  # noqa: F401
    except ImportError:
        return False
    return True


def make_cache(cfg: dict[str, Any]) -> Any:
    """Our cache for a worker: ``RedisDataCache`` on the run's db and prefix, or memory."""
    _import_product()
    if cfg["cache"] == "redis":
        from tracking.cache.redis import RedisDataCache

        return RedisDataCache(cfg["url"], key_prefix=cfg["prefix"])
    from tracking import MemoryDataCache

    return MemoryDataCache()


def make_our_trackers(count: int, variant: str) -> list[Any]:
    """The same trackers as dictrack_worker.make_trackers, built with our API."""
    _import_product()
    from tracking import CountTracker, KeyValueEQ

    target, loop = (5, True) if variant == "complete" else (NEVER, False)
    return [
        CountTracker(f"t{j}", [KeyValueEQ("status", "active")], target, loop_forever=loop)
        for j in range(count)
    ]


def our_install(cache: Any, groups: int, trackers: int, variant: str) -> None:
    """Install ``groups`` warm groups with ``DataCache.install_group`` (one call each).

    That is the cold-load primitive: the same state ``add_trackers`` leaves,
    without the write-through to the store that admin calls do.
    """
    from tracking.cache.base import CachedTracker

    template = make_our_trackers(trackers, variant)
    for g in range(groups):
        entries = [CachedTracker(t.definition, t.state.copy()) for t in template]
        cache.install_group(f"g{g}", entries)


def our_setup(cfg: dict[str, Any]) -> dict[str, Any]:
    """Install the warm groups in Redis (one process, before the workers start)."""
    cache = make_cache(cfg)
    started = time.perf_counter()
    our_install(cache, cfg["groups"], cfg["trackers"], cfg["variant"])
    return {"setup_s": time.perf_counter() - started}


def our_run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Warm events for ``duration`` seconds (or ``max_events``), timed one by one.

    Every group gets one non-matching event first, so the worker's
    definitions cache is warm (as in a long-running worker); a memory cache
    is installed here, since it cannot be shared between processes.
    """
    from tracking import MemoryDataStore, TrackingManager

    cache = make_cache(cfg)
    if cfg["cache"] == "memory":
        our_install(cache, cfg["groups"], cfg["trackers"], cfg["variant"])
    manager = TrackingManager(cache, MemoryDataStore())
    groups = cfg["groups"]
    for g in range(groups):
        manager.track(f"g{g}", WARMUP_EVENT)
    rng = random.Random(cfg["seed"])
    for _ in range(20):
        manager.track(f"g{rng.randrange(groups)}", WARMUP_EVENT)
    profiler = None
    if cfg.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    COUNTER.reset()
    lat_ns: list[int] = []
    append = lat_ns.append
    deadline = time.perf_counter() + cfg["duration"]
    max_events = cfg["max_events"]
    perf = time.perf_counter_ns
    track = manager.track
    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    while True:
        group_id = f"g{rng.randrange(groups)}" if groups > 1 else "g0"
        t0 = perf()
        ok = track(group_id, EVENT)[0]
        append(perf() - t0)
        if not ok:
            raise RuntimeError(f"could not track {group_id}")
        if len(lat_ns) >= max_events or time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - started
    counts = COUNTER.snapshot()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(cfg["profile"])
    return {
        "events": len(lat_ns),
        "elapsed_s": elapsed,
        "lat_us": [round(v / 1000, 1) for v in lat_ns],
        "client": counts,
    }


def our_cold(cfg: dict[str, Any]) -> dict[str, Any]:
    """First event of groups that are only in the store, and of worker-cold groups.

    ``cold``: the group's records are in the store only; the first ``track``
    misses, reads the store once, installs the group and applies the event.
    ``worker_cold``: the group is in Redis but a fresh worker (new cache and
    manager objects) has not seen its definitions yet.
    """
    from tracking import MemoryDataStore, TrackingManager
    from tracking.cache.base import CachedTracker
    from tracking.persistence import cache_to_record

    store = MemoryDataStore()
    loads = {"n": 0}
    load_group = store.load_group

    def counted_load_group(group_id: str, now: float | None = None) -> Any:
        loads["n"] += 1
        return load_group(group_id, now=now)

    store.load_group = counted_load_group  # type: ignore[method-assign]
    manager = TrackingManager(make_cache(cfg), store)
    group_ids = ["warmup"] + [f"cold{k}" for k in range(cfg["samples"])]
    for group_id in group_ids:
        entries = [
            CachedTracker(t.definition, t.state) for t in make_our_trackers(cfg["trackers"], "")
        ]
        store.save([cache_to_record(group_id, e, 1) for e in entries])
    manager.track("warmup", WARMUP_EVENT)  # connection and scripts, not measured

    def measure(mgr: Any, group_id: str) -> dict[str, Any]:
        loads["n"] = 0
        COUNTER.reset()
        t0 = time.perf_counter_ns()
        ok = mgr.track(group_id, EVENT)[0]
        t1 = time.perf_counter_ns()
        if not ok:
            raise RuntimeError(f"could not cold-load {group_id}")
        counts = COUNTER.snapshot()
        return {
            "time_us": (t1 - t0) / 1000,
            "round_trips": counts["round_trips"],
            "commands": counts["commands"],
            "store_reads": loads["n"],
            "cached_trackers": len(mgr.get_trackers(group_id)),
        }

    cold = [measure(manager, g) for g in group_ids[1:]]
    fresh = TrackingManager(make_cache(cfg), store)
    fresh.track("warmup", WARMUP_EVENT)
    worker_cold = [measure(fresh, g) for g in group_ids[1:]]
    return {"samples": cold, "worker_cold": worker_cold}


def our_breakdown(cfg: dict[str, Any]) -> dict[str, Any]:
    """Where a warm event's time goes, per tracker count, on one group (1 process).

    Interleaves, ``iterations`` times: a ``PING`` (the bare redis-py round
    trip), ``DataCache.apply`` with precomputed steps (round trip + Lua +
    argument building + reply parsing) and ``TrackingManager.track`` (all of
    it: validation, condition evaluation, result objects). Medians in us.
    """
    import redis

    from tracking import MemoryDataStore, TrackingManager
    from tracking.cache.base import CachedTracker, TrackStep
    from tracking.trackers import evaluate

    client = redis.Redis.from_url(cfg["url"])
    out: dict[str, Any] = {}
    for trackers in cfg["tracker_counts"]:
        cache = make_cache(cfg)
        group_id = f"bd{trackers}"
        template = make_our_trackers(trackers, "steady")
        cache.install_group(group_id, [CachedTracker(t.definition, t.state) for t in template])
        manager = TrackingManager(cache, MemoryDataStore())
        manager.track(group_id, WARMUP_EVENT)
        loaded = cache.get_definitions(group_id)
        assert loaded is not None
        version, defs = loaded
        steps = []
        for definition in defs:
            delta = evaluate(definition, EVENT)
            if delta is not None:
                steps.append(TrackStep(definition, delta))
        ping: list[int] = []
        apply: list[int] = []
        track: list[int] = []
        perf = time.perf_counter_ns
        for i in range(cfg["iterations"]):
            t0 = perf()
            client.ping()
            t1 = perf()
            cache.apply(group_id, version, steps, f"bd-{i}")
            t2 = perf()
            manager.track(group_id, EVENT)
            t3 = perf()
            ping.append(t1 - t0)
            apply.append(t2 - t1)
            track.append(t3 - t2)
        out[str(trackers)] = {
            "ping_us": statistics.median(ping) / 1000,
            "apply_us": statistics.median(apply) / 1000,
            "track_us": statistics.median(track) / 1000,
        }
    return {"breakdown": out}


def worker_main(raw: str) -> None:
    """``--worker``: one of setup / run / cold for our engine; JSON on stdout."""
    cfg = json.loads(raw)
    _import_product()
    COUNTER.install()
    modes = {"setup": our_setup, "run": our_run, "cold": our_cold, "breakdown": our_breakdown}
    result = modes[cfg["mode"]](cfg)
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# Orchestrator.
# --------------------------------------------------------------------------
def log(message: str) -> None:
    """Progress on stderr, timestamped."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def db_url(base: str, db: int) -> str:
    """``base`` with its database number replaced by ``db``."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def ensure_dictrack_venv() -> Path:
    """Create ``bench/venvs/dictrack`` with dictrack 2.1.5 unless it is there already."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import dictrack.data_caches.redis, redis_lock, redis"]
    if python.exists() and subprocess.run(probe, check=False, capture_output=True).returncode == 0:
        return python
    log(f"creating {VENV.relative_to(ROOT)} with {' '.join(DICTRACK_PINS)}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *DICTRACK_PINS],
        check=True,
    )
    subprocess.run(probe, check=True)
    return python


def worker_command(engine: str, dictrack_python: Path, cfg: dict[str, Any]) -> list[str]:
    """The command line of one worker process of ``engine``."""
    if engine == "ours":
        return [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    return [str(dictrack_python), str(DICTRACK_WORKER), json.dumps(cfg)]


def run_once(engine: str, dictrack_python: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run a setup/cold worker to completion and return its JSON result."""
    proc = subprocess.run(
        worker_command(engine, dictrack_python, cfg),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} {cfg['mode']} worker failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


class Server:
    """Admin view of the Redis server: empty-db checks, stats, memory, cleanup."""

    def __init__(self, base_url: str) -> None:
        import redis

        self.base_url = base_url
        self.redis = redis
        self.admin = redis.Redis.from_url(db_url(base_url, 0))

    def client(self, db: int) -> Any:
        """A client on database ``db``."""
        return self.redis.Redis.from_url(db_url(self.base_url, db))

    def require_empty(self, db: int) -> None:
        """Refuse to run on a database that holds keys we did not create."""
        size = self.client(db).dbsize()
        if size:
            raise SystemExit(
                f"Redis db {db} holds {size} keys; the benchmark only runs on empty dbs "
                "(choose others with --ours-db / --dictrack-db)"
            )

    def commandstats(self) -> dict[str, dict[str, float]]:
        """``INFO commandstats`` as {command: {calls, usec}}."""
        raw = self.admin.info("commandstats")
        return {
            key.removeprefix("cmdstat_"): {"calls": v["calls"], "usec": v["usec"]}
            for key, v in raw.items()
        }

    def cpu_seconds(self) -> float:
        """``used_cpu_sys + used_cpu_user`` of the whole server (all its clients)."""
        cpu = self.admin.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def used_memory(self) -> int:
        """``used_memory`` of the whole server."""
        return int(self.admin.info("memory")["used_memory"])

    def keys(self, db: int, prefix: str) -> list[bytes]:
        """Every key of ``db`` that contains the run's ``prefix``."""
        return list(self.client(db).scan_iter(match=f"*{prefix}*", count=1000))

    def memory(self, db: int, prefix: str) -> dict[str, Any]:
        """``MEMORY USAGE`` summed over the run's keys in ``db``."""
        client = self.client(db)
        keys = self.keys(db, prefix)
        total = 0
        for start in range(0, len(keys), 1000):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 1000]:
                pipe.memory_usage(key, samples=0)
            total += sum(v or 0 for v in pipe.execute())
        return {"keys": len(keys), "bytes": total}

    def cleanup(self, db: int, prefix: str) -> int:
        """DEL the run's keys in ``db`` (only keys containing ``prefix``).

        DEL rather than UNLINK, and then wait for lazy freeing to finish, so
        that the next ``used_memory`` reading is not skewed by this one.
        """
        client = self.client(db)
        keys = self.keys(db, prefix)
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        for _ in range(100):
            if not int(self.admin.info("memory").get("lazyfree_pending_objects", 0)):
                break
            time.sleep(0.05)
        return len(keys)

    def info(self) -> dict[str, Any]:
        """Server version and setup, for the results file."""
        server = self.admin.info("server")
        memory = self.admin.info("memory")
        return {
            "redis_version": server["redis_version"],
            "redis_mode": server.get("redis_mode"),
            "maxmemory": memory.get("maxmemory"),
            "maxmemory_policy": memory.get("maxmemory_policy"),
            "connected_clients_at_start": self.admin.info("clients")["connected_clients"],
        }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def stats_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], events: int
) -> dict[str, Any]:
    """Server-side calls and CPU microseconds per event, by command."""
    by_cmd: dict[str, dict[str, float]] = {}
    for cmd, now in after.items():
        then = before.get(cmd, {"calls": 0, "usec": 0})
        calls = now["calls"] - then["calls"]
        if calls:
            by_cmd[cmd] = {
                "calls_per_event": calls / events,
                "usec_per_event": (now["usec"] - then["usec"]) / events,
            }
    # Our own INFO call (one per snapshot) is not the engine's.
    if "info" in by_cmd:
        by_cmd["info"]["calls_per_event"] -= 1 / events
        if by_cmd["info"]["calls_per_event"] <= 0:
            del by_cmd["info"]
    return {
        "calls_per_event": sum(v["calls_per_event"] for v in by_cmd.values()),
        "usec_per_event": sum(v["usec_per_event"] for v in by_cmd.values()),
        "evalsha_per_event": by_cmd.get("evalsha", {}).get("calls_per_event", 0.0),
        "eval_per_event": by_cmd.get("eval", {}).get("calls_per_event", 0.0),
        "by_command": {k: {n: round(x, 4) for n, x in v.items()} for k, v in by_cmd.items()},
    }


def run_cell(
    server: Server,
    engine: str,
    dictrack_python: Path,
    cfg: dict[str, Any],
    procs: int,
) -> dict[str, Any]:
    """Start ``procs`` workers, release them together, and aggregate their numbers."""
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        workers: list[subprocess.Popen[str]] = []
        errs: list[IO[str]] = []
        for p in range(procs):
            err = stack.enter_context(tempfile.TemporaryFile("w+"))
            errs.append(err)
            wcfg = dict(cfg, mode="run", seed=cfg["seed"] + p)
            workers.append(
                subprocess.Popen(
                    worker_command(engine, dictrack_python, wcfg),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                    cwd=ROOT,
                )
            )
        for worker, err_file in zip(workers, errs, strict=True):
            assert worker.stdout is not None
            line = worker.stdout.readline()
            if not line:
                worker.wait()
                err_file.seek(0)
                raise RuntimeError(f"{engine} worker died before ready:\n{err_file.read()[-4000:]}")
        before = server.commandstats()
        cpu_before = server.cpu_seconds()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker, err_file in zip(workers, errs, strict=True):
            out, _ = worker.communicate()
            if worker.returncode != 0:
                err_file.seek(0)
                raise RuntimeError(f"{engine} worker failed:\n{err_file.read()[-4000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        after = server.commandstats()
        cpu_after = server.cpu_seconds()
    events = sum(r["events"] for r in results)
    lat = sorted(v for r in results for v in r["lat_us"])
    elapsed = max(r["elapsed_s"] for r in results)
    client_cmds: Counter[str] = Counter()
    for r in results:
        client_cmds.update(r["client"]["commands"])
    round_trips = sum(r["client"]["round_trips"] for r in results)
    return {
        "engine": engine,
        "variant": cfg["variant"],
        "trackers": cfg["trackers"],
        "groups": cfg["groups"],
        "procs": procs,
        "events": events,
        "elapsed_s": round(elapsed, 4),
        "events_per_s": round(events / elapsed, 1),
        "load_avg_1m_before": round(load_before, 2),
        "per_process_events_per_s": [round(r["events"] / r["elapsed_s"], 1) for r in results],
        "latency_us": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "p999": percentile(lat, 99.9),
            "max": lat[-1],
            "mean": round(statistics.fmean(lat), 1),
        },
        "client": {
            "round_trips_per_event": round(round_trips / events, 4),
            "commands_per_event": round(sum(client_cmds.values()) / events, 4),
            "by_command": {k: round(v / events, 4) for k, v in sorted(client_cmds.items())},
        },
        "server": {
            **stats_delta(before, after, events),
            # INFO cpu: the server's CPU (commands, Lua, network I/O) per event,
            # server-wide like commandstats (run on a private server to read it).
            "cpu_us_per_event": round((cpu_after - cpu_before) / events * 1e6, 2),
        },
    }


def measure_setup(
    server: Server, engine: str, dictrack_python: Path, cfg: dict[str, Any], db: int
) -> dict[str, Any]:
    """Install the warm groups of ``cfg`` and measure their Redis footprint."""
    groups, trackers = cfg["groups"], cfg["trackers"]
    mem_before = server.used_memory()
    setup = run_once(engine, dictrack_python, dict(cfg, mode="setup"))
    footprint = server.memory(db, cfg["prefix"])
    return {
        "engine": engine,
        "variant": cfg["variant"],
        "trackers": trackers,
        "groups": groups,
        "keys": footprint["keys"],
        "bytes": footprint["bytes"],
        "bytes_per_tracker": round(footprint["bytes"] / (groups * trackers), 1),
        "used_memory_delta_per_tracker": round(
            (server.used_memory() - mem_before) / (groups * trackers), 1
        ),
        "setup_s": round(setup["setup_s"], 3),
        "versions": setup.get("versions"),
    }


def summarize_cold(engine: str, trackers: int, result: dict[str, Any]) -> dict[str, Any]:
    """Medians over the cold samples of one engine and tracker count."""

    def med(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "samples": len(samples),
            "round_trips": statistics.median(s["round_trips"] for s in samples),
            "commands": statistics.median(sum(s["commands"].values()) for s in samples),
            "store_reads": statistics.median(s["store_reads"] for s in samples),
            "time_us_p50": round(statistics.median(s["time_us"] for s in samples), 1),
            "time_us_max": round(max(s["time_us"] for s in samples), 1),
            "by_command": samples[0]["commands"],
            "cached_trackers_after": samples[0]["cached_trackers"],
        }

    out = {"engine": engine, "trackers": trackers, "cold": med(result["samples"])}
    if result.get("worker_cold"):
        out["worker_cold"] = med(result["worker_cold"])
    return out


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_kb"] = int(line.split()[1])
    return info


def git_info() -> dict[str, Any]:
    """The product commit measured, and whether the cache module had local changes."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], check=False, capture_output=True, text=True, cwd=ROOT)
        return proc.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "cache_module_uncommitted": bool(
            git("status", "--porcelain", "tracking/cache/redis", "tracking/cache/lua")
        ),
    }


def targets(cells: list[dict[str, Any]], cold: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 4's speed targets, checked against the measured numbers."""

    def cell(engine: str, t: int, g: int, p: int, variant: str = "steady") -> dict[str, Any]:
        for c in cells:
            key = (c["engine"], c["trackers"], c["groups"], c["procs"], c["variant"])
            if key == (engine, t, g, p, variant):
                return c
        return {}

    ours = [c for c in cells if c["engine"] == "ours"]
    rts = {
        f"T{c['trackers']}/G{c['groups']}/P{c['procs']}/{c['variant']}": c["client"][
            "round_trips_per_event"
        ]
        for c in ours
    }
    speedups = {}
    for g in sorted({c["groups"] for c in cells}):
        mine, theirs = cell("ours", 10, g, 1), cell("dictrack", 10, g, 1)
        if mine and theirs:
            speedups[f"G{g}"] = round(mine["events_per_s"] / theirs["events_per_s"], 2)
    p99 = {
        f"G{c['groups']}/P{c['procs']}/{c['variant']}": round(c["latency_us"]["p99"] / 1000, 3)
        for c in ours
        if c["trackers"] == 10
    }
    cold_ours = {
        f"T{c['trackers']}": {
            "round_trips": c["cold"]["round_trips"],
            "store_reads": c["cold"]["store_reads"],
        }
        for c in cold
        if c["engine"] == "ours"
    }
    return {
        "one_round_trip_per_warm_event": {
            "measured": rts,
            "met": bool(rts) and all(v <= 1.0 for v in rts.values()),
        },
        "10x_dictrack_events_per_s_at_10_trackers_1_process": {
            "measured_speedup": speedups,
            "met": bool(speedups) and all(v >= 10 for v in speedups.values()),
        },
        "p99_under_1ms_at_10_trackers": {
            "measured_ms": p99,
            "met_1_process": all(v < 1 for k, v in p99.items() if "/P1/" in k) and bool(p99),
            "met_all": bool(p99) and all(v < 1 for v in p99.values()),
        },
        "cold_load_at_most_3_round_trips_plus_1_store_read": {
            "measured": cold_ours,
            "met": bool(cold_ours)
            and all(v["round_trips"] <= 3 and v["store_reads"] <= 1 for v in cold_ours.values()),
        },
    }


BEGIN = "<!-- engine-bench:begin (bench/engine_bench.py --markdown bench/results/engine.json) -->"
END = "<!-- engine-bench:end -->"
SUMMARY_BEGIN = (
    "<!-- engine-bench-summary:begin "
    "(bench/engine_bench.py --markdown bench/results/engine.json --summary) -->"
)
SUMMARY_END = "<!-- engine-bench-summary:end -->"


def _run_line(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    start, end = meta.get("load_avg_at_start"), meta.get("load_avg_at_end")
    loads = (
        f"1-minute load average of the shared 2-core machine {start[0]:.2f} at the start, "
        f"{end[0]:.2f} at the end"
        if start and end
        else "load average not recorded"
    )
    commit = meta.get("git", {}).get("commit", "?")[:7]
    version = meta.get("redis", {}).get("redis_version", "?")
    return (
        f"Run {meta.get('date', '?')} ({meta.get('mode', '?')}, commit `{commit}`, "
        f"Redis {version} at {meta.get('redis_url', '?')}); {loads}."
    )


def summary_markdown(results: dict[str, Any]) -> str:
    """The README's short table: 10 trackers per group, 1 process, between markers."""
    by = {
        (c["engine"], c["variant"], c["trackers"], c["groups"], c["procs"]): c
        for c in results["cells"]
    }
    groups = sorted({c["groups"] for c in results["cells"]})

    def cells(engine: str) -> list[dict[str, Any]]:
        return [by[(engine, "steady", 10, g, 1)] for g in groups]

    def rate(c: dict[str, Any]) -> str:
        return f"{c['events_per_s']:,.0f}"

    def lat(c: dict[str, Any]) -> str:
        return f"{c['latency_us']['p50'] / 1000:.2f} / {c['latency_us']['p99'] / 1000:.2f}"

    def rts(c: dict[str, Any]) -> str:
        return f"{c['client']['round_trips_per_event']:g}"

    def cpu(c: dict[str, Any]) -> str:
        value = c["server"].get("cpu_us_per_event")
        return "-" if value is None else f"{value:.0f}"

    def row(label: str, fmt: Any, sep: str = " / ") -> str:
        mine = sep.join(fmt(c) for c in cells("ours"))
        theirs = sep.join(fmt(c) for c in cells("dictrack"))
        return f"| {label} | {mine} | {theirs} |"

    def cold(engine: str) -> str:
        found = [c for c in results["cold"] if c["engine"] == engine and c["trackers"] == 10]
        if not found:
            return "-"
        got = found[0]["cold"]
        return f"{got['round_trips']:g} round trips + {got['store_reads']:g} store read"

    def memory(engine: str) -> str:
        found = [
            m
            for m in results["memory"]
            if m["engine"] == engine and m["variant"] == "steady" and m["trackers"] == 10
        ]
        return " / ".join(f"{m['bytes_per_tracker']:,.0f} B" for m in found) or "-"

    ratios = " / ".join(
        f"{m['events_per_s'] / d['events_per_s']:.1f}x"
        for m, d in zip(cells("ours"), cells("dictrack"), strict=True)
    )
    which = " / ".join(f"{g:,} group{'s' if g > 1 else ''}" for g in groups)
    lines = [
        SUMMARY_BEGIN,
        "",
        _run_line(results),
        "",
        "| 10 trackers per group, 1 process | this engine | dictrack 2.1.5 |",
        "|---|---:|---:|",
        row(f"events/s ({which})", rate),
        f"| events/s ratio ({which}) | {ratios} | 1x |",
        row(f"p50 / p99 latency, ms ({which.replace(' / ', '; ')})", lat, "; "),
        row(f"Redis round trips per warm event ({which})", rts),
        row(f"Redis CPU per event, µs, from `INFO cpu` ({which})", cpu),
        f"| cold first event of a group in the store | {cold('ours')} | {cold('dictrack')} |",
        f"| Redis memory per tracker ({which}) | {memory('ours')} | {memory('dictrack')} |",
        "",
        SUMMARY_END,
    ]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The README's result tables, from a results file."""
    out = [
        BEGIN,
        "",
        _run_line(results),
        "",
        "| trackers | groups | procs | variant | ours ev/s | dictrack ev/s | ratio "
        "| ours p50 / p99 ms | dictrack p50 / p99 ms | ours RT/ev | dictrack RT/ev "
        "| ours Redis calls/ev (EVALSHA) | dictrack Redis calls/ev "
        "| ours / dictrack Redis CPU us/ev |",
        "|---:|---:|---:|---|---:|---:|---:|---|---|---:|---:|---|---:|---|",
    ]
    by = {
        (c["engine"], c["variant"], c["trackers"], c["groups"], c["procs"]): c
        for c in results["cells"]
    }
    seen = []
    for c in results["cells"]:
        key = (c["variant"], c["trackers"], c["groups"], c["procs"])
        if key in seen:
            continue
        seen.append(key)
        mine, theirs = by.get(("ours", *key)), by.get(("dictrack", *key))
        if not mine or not theirs:
            continue

        def lat(c: dict[str, Any]) -> str:
            return f"{c['latency_us']['p50'] / 1000:.2f} / {c['latency_us']['p99'] / 1000:.2f}"

        def cpu(c: dict[str, Any]) -> str:
            value = c["server"].get("cpu_us_per_event")
            return "-" if value is None else f"{value:.0f}"

        out.append(
            f"| {key[1]} | {key[2]:,} | {key[3]} | {key[0]} "
            f"| {mine['events_per_s']:,.0f} | {theirs['events_per_s']:,.0f} "
            f"| {mine['events_per_s'] / theirs['events_per_s']:.1f}x "
            f"| {lat(mine)} | {lat(theirs)} "
            f"| {mine['client']['round_trips_per_event']:.2f} "
            f"| {theirs['client']['round_trips_per_event']:.2f} "
            f"| {mine['server']['calls_per_event']:.1f} "
            f"({mine['server']['evalsha_per_event']:.2f}) "
            f"| {theirs['server']['calls_per_event']:.1f} "
            f"| {cpu(mine)} / {cpu(theirs)} |"
        )
    out += [
        "",
        "| engine | trackers | groups | keys | bytes/tracker | after the run: bytes/event |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in results["memory"]:
        if m["variant"] != "steady":
            continue
        out.append(
            f"| {m['engine']} | {m['trackers']} | {m['groups']:,} | {m['keys']:,} "
            f"| {m['bytes_per_tracker']:,.1f} | {m.get('after_run_bytes_per_event', 0):,.1f} |"
        )
    out += [
        "",
        "| engine | trackers | cold: round trips | store reads | Redis commands | time p50 ms "
        "| worker-cold: round trips | time p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in results["cold"]:
        wc = c.get("worker_cold")
        out.append(
            f"| {c['engine']} | {c['trackers']} | {c['cold']['round_trips']:g} "
            f"| {c['cold']['store_reads']:g} | {c['cold']['commands']:g} "
            f"| {c['cold']['time_us_p50'] / 1000:.2f} "
            + (f"| {wc['round_trips']:g} | {wc['time_us_p50'] / 1000:.2f} |" if wc else "| - | - |")
        )
    if results.get("breakdown_us"):
        out += [
            "",
            "| trackers | PING us | cache.apply us | manager.track us |",
            "|---:|---:|---:|---:|",
        ]
        for t, b in results["breakdown_us"].items():
            out.append(f"| {t} | {b['ping_us']:.0f} | {b['apply_us']:.0f} | {b['track_us']:.0f} |")
    out += ["", END]
    return "\n".join(out)


def chart(results: dict[str, Any], path: Path) -> None:
    """Events/s and p99 per configuration, ours vs dictrack, on log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = results["cells"]
    configs = []
    for c in cells:
        key = (c["variant"], c["trackers"], c["groups"], c["procs"])
        if key not in configs:
            configs.append(key)
    by = {(c["engine"], c["variant"], c["trackers"], c["groups"], c["procs"]): c for c in cells}
    labels = [f"{t}T/{g:,}G/{p}P" + (" cmpl" if v == "complete" else "") for v, t, g, p in configs]
    x = list(range(len(configs)))
    width = 0.4
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(10, len(configs) * 0.75), 9))
    colors = {"ours": "tab:blue", "dictrack": "tab:orange"}
    for offset, engine in ((-width / 2, "ours"), (width / 2, "dictrack")):
        eps = [by.get((engine, *k), {}).get("events_per_s", 0) for k in configs]
        p99 = [by.get((engine, *k), {}).get("latency_us", {}).get("p99", 0) / 1000 for k in configs]
        name = "this engine" if engine == "ours" else "dictrack 2.1.5"
        ax1.bar([i + offset for i in x], eps, width, label=name, color=colors[engine])
        ax2.bar([i + offset for i in x], p99, width, label=name, color=colors[engine])
    for i, k in enumerate(configs):
        mine, theirs = by.get(("ours", *k)), by.get(("dictrack", *k))
        if mine and theirs and theirs["events_per_s"]:
            ratio = mine["events_per_s"] / theirs["events_per_s"]
            ax1.annotate(
                f"{ratio:.1f}x",
                (i, mine["events_per_s"]),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax1.set_yscale("log")
    ax1.set_ylabel("events/s (log)")
    ax1.set_title(
        f"events/s per configuration (T trackers/group, G groups, P processes); "
        f"Redis {results['meta']['redis']['redis_version']}, {results['meta']['date'][:10]}"
    )
    ax2.set_yscale("log")
    ax2.set_ylabel("p99 latency, ms (log)")
    ax2.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    ax2.set_title("p99 per-event latency (dashed: 1 ms target at 10 trackers)")
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.legend()
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Measure both engines over the whole grid and write the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1-2 minute run (1,000 groups)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--ours-db", type=int, default=14)
    parser.add_argument("--dictrack-db", type=int, default=15)
    parser.add_argument("--duration", type=float, help="seconds per cell (3, quick: 1)")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--trackers", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--groups", type=int, nargs="+", help="default 1 10000 (quick: 1 1000)")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--ours-cache",
        choices=["auto", "redis", "memory"],
        default="auto",
        help="our cache backend (auto: RedisDataCache when importable)",
    )
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS_JSON)
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="JSON",
        help="print the README tables of an existing results file and exit",
    )
    parser.add_argument(
        "--summary", action="store_true", help="with --markdown: the README's short table"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker_main(args.worker)
        return
    if args.markdown is not None:
        loaded = json.loads(args.markdown.read_text())
        print(summary_markdown(loaded) if args.summary else markdown(loaded))
        return

    duration = args.duration or (1.0 if args.quick else 3.0)
    group_counts = args.groups or ([1, 1000] if args.quick else [1, 10_000])
    cold_samples = 5 if args.quick else 20
    ours_cache = args.ours_cache
    if ours_cache == "auto":
        ours_cache = "redis" if redis_cache_available() else "memory"
    if ours_cache == "memory":
        log("WARNING: RedisDataCache not used: our side runs on the in-process MemoryDataCache")

    started = time.perf_counter()
    load_at_start = os.getloadavg()
    if load_at_start[0] > 0.5 * (os.cpu_count() or 1):
        log(f"WARNING: load average {load_at_start[0]:.2f} at start: other work shares the CPUs")
    run_id = uuid.uuid4().hex[:10]
    prefix = {"ours": f"bench-{run_id}", "dictrack": f"bench-{run_id}"}
    dbs = {"ours": args.ours_db, "dictrack": args.dictrack_db}
    urls = {e: db_url(args.redis_url, dbs[e]) for e in ENGINES}
    server = Server(args.redis_url)
    for engine in args.engines:
        server.require_empty(dbs[engine])
    dictrack_python = ensure_dictrack_venv() if "dictrack" in args.engines else Path()

    cells: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    cold: list[dict[str, Any]] = []
    breakdown: dict[str, Any] = {}
    versions: dict[str, Any] = {}
    base = {"duration": duration, "max_events": 1_000_000, "seed": 1}
    plan: list[tuple[str, int, int]] = [
        ("steady", t, g) for t in args.trackers for g in group_counts
    ]
    if 10 in args.trackers:
        plan += [("complete", 10, g) for g in group_counts]
    # Engines are interleaved per configuration (setup both, then for each
    # process count run ours and dictrack back to back), so that background
    # load on a shared machine hits both sides alike.
    try:
        for variant, trackers, groups in plan:
            cfgs: dict[str, dict[str, Any]] = {}
            for engine in args.engines:
                cfgs[engine] = dict(
                    base,
                    url=urls[engine],
                    prefix=prefix[engine],
                    groups=groups,
                    trackers=trackers,
                    variant=variant,
                    cache=ours_cache,
                )
                if engine == "dictrack" or ours_cache == "redis":
                    entry = measure_setup(
                        server, engine, dictrack_python, cfgs[engine], dbs[engine]
                    )
                    versions.setdefault(engine, entry.pop("versions", None))
                    memory.append(entry)
            for procs in args.procs if variant == "steady" else [1]:
                for engine in args.engines:
                    log(f"{engine}: {variant} {trackers} trackers x {groups} groups, {procs}P")
                    cell = run_cell(server, engine, dictrack_python, cfgs[engine], procs)
                    cell["cache"] = "redis" if engine == "dictrack" else ours_cache
                    cells.append(cell)
                    log(
                        f"  {cell['events_per_s']:.0f} ev/s, p50 {cell['latency_us']['p50']} us,"
                        f" p99 {cell['latency_us']['p99']} us,"
                        f" {cell['client']['round_trips_per_event']} RT/event"
                    )
            for entry in memory:
                if (entry["variant"], entry["trackers"], entry["groups"]) != (
                    variant,
                    trackers,
                    groups,
                ):
                    continue
                engine = entry["engine"]
                after = server.memory(dbs[engine], prefix[engine])
                events = sum(
                    c["events"]
                    for c in cells
                    if (c["engine"], c["variant"], c["trackers"], c["groups"])
                    == (engine, variant, trackers, groups)
                )
                entry["events_applied"] = events
                entry["after_run_bytes"] = after["bytes"]
                entry["after_run_bytes_per_event"] = round(
                    (after["bytes"] - entry["bytes"]) / max(events, 1), 1
                )
            for engine in args.engines:
                server.cleanup(dbs[engine], prefix[engine])
        for engine in args.engines:
            db, pfx = dbs[engine], prefix[engine]
            if engine == "dictrack" or ours_cache == "redis":
                for trackers in args.trackers:
                    log(f"{engine}: cold first event, {trackers} trackers")
                    cfg = dict(
                        url=urls[engine],
                        prefix=pfx,
                        trackers=trackers,
                        samples=cold_samples,
                        cache=ours_cache,
                        mode="cold",
                    )
                    result = run_once(engine, dictrack_python, cfg)
                    cold.append(summarize_cold(engine, trackers, result))
                    server.cleanup(db, pfx)
            if engine == "ours" and ours_cache == "redis":
                log("ours: where a warm event's time goes (ping / apply / track)")
                cfg = dict(
                    url=urls[engine],
                    prefix=pfx,
                    tracker_counts=args.trackers,
                    iterations=500 if args.quick else 2000,
                    cache=ours_cache,
                    mode="breakdown",
                )
                breakdown = run_once(engine, dictrack_python, cfg)["breakdown"]
                server.cleanup(db, pfx)
    finally:
        leftovers = {e: server.cleanup(dbs[e], prefix[e]) for e in args.engines}
        for engine in args.engines:
            remaining = server.client(dbs[engine]).dbsize()
            if remaining:
                log(f"note: db {dbs[engine]} holds {remaining} keys not created by this run")

    _import_product()
    import redis

    import tracking

    results: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "total_s": round(time.perf_counter() - started, 1),
            "load_avg_at_start": [round(v, 2) for v in load_at_start],
            "load_avg_at_end": [round(v, 2) for v in os.getloadavg()],
            "machine": machine_info(),
            "redis": server.info(),
            "redis_url": args.redis_url,
            "dbs": dbs,
            "versions": {
                "tracking": tracking.__version__,
                "redis_py": redis.__version__,
                "dictrack_side": versions.get("dictrack"),
            },
            "git": git_info(),
            "ours_cache": ours_cache,
            "duration_per_cell_s": duration,
            "event": EVENT,
            "trackers": "CountTracker(KeyValueEQ('status', 'active')); steady: target 1e12; "
            "complete: target 5, loop_forever (a stage completes on every event from the 5th)",
            "dictrack_store": "InMemoryDataStore (bench/dictrack_worker.py): dictrack's "
            "MongoDBDataStore needs a MongoDB; only the cache path is measured",
            "our_store": "MemoryDataStore",
            "keys_left_after_cleanup": leftovers,
        },
        "cells": cells,
        "memory": memory,
        "cold": cold,
        "breakdown_us": breakdown,
    }
    results["targets"] = targets(cells, cold)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {args.output}")
    if not args.no_chart:
        png = args.output.with_suffix(".png")
        chart(results, png)
        log(f"wrote {png}")
    print(json.dumps(results["targets"], indent=1))


if __name__ == "__main__":
    main()
