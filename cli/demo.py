"""``tracking demo``: the whole product on one machine, with no servers set up.

Starts an embedded Redis (owned by the demo process: it stops with it, even
on SIGKILL), a prefork worker (``-c 2``) and celery beat as children tied
to the demo by a parent-death signal; adds sample trackers with the
``add_trackers`` task; sends a stream of events with ``track.delay``; waits
until the worker applied them all and the follow-up handlers below ran;
prints the trackers and what the handlers received; then stops everything
(warm shutdown).

Its files live in one directory of its own and nowhere else: by default
:func:`last_demo_dir`, a per-user directory under the system's temp dir
that each run empties first and leaves in place afterwards, so
``tracking dashboard`` can show the last run with no configuration (see
:mod:`cli.browse`). ``--clean`` removes it at the end instead; a
``--data-dir`` of the user's choice must be new, empty, or an earlier
demo's (it holds :data:`MARKER_FILE`).

"Applied" is known exactly: the same trackers and events run through an
in-memory :class:`~tracking.manager.TrackingManager` in the demo process,
and the demo waits until the workers' Redis state and the handlers'
records match that model.

This module is also the demo's handler module (``TRACKING_EVENT_HANDLERS``):
the worker imports it and :func:`remember` records every event in Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import stat
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery_app import runtime
from celery_app.handlers import on_event
from cli import procs
from config.settings import Settings
from tracking.events import EVENT_ALL, EVENT_TRACKER_ALL_COMPLETED, TrackerEvent
from tracking.limiters import CountLimiter
from tracking.trackers import AccumulationTracker, BaseTracker, CountTracker

GROUPS = ("alice", "bob", "carol")
EVENTS_KEY = "demo-events"
REWARDS_KEY = "demo-rewards"
#: The demo's key prefix and handler module: what a dashboard over its files needs.
KEY_PREFIX = "demo"
HANDLERS = ["cli.demo"]
#: Written into the demo's directory: marks it as one (safe to empty) and
#: tells the dashboard the key prefix and handlers to read it with.
MARKER_FILE = "tracking-demo.json"


class DemoDirError(Exception):
    """The demo's directory cannot be used (not ours, not empty, unsafe)."""


def last_demo_dir() -> Path:
    """Where ``tracking demo`` keeps its last run: ``<tmp>/celery-tracking-demo-<uid>``.

    Under the temp dir so it never mixes with the user's own data and goes
    with the next reboot; per user because the temp dir is shared.
    """
    return Path(tempfile.gettempdir()) / f"celery-tracking-demo-{os.getuid()}"


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The demo marker in ``directory`` (its key prefix and handlers), or None."""
    try:
        marker = json.loads((directory / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    prefix, handlers = marker.get("key_prefix"), marker.get("event_handlers")
    if not isinstance(prefix, str) or not isinstance(handlers, list):
        return None
    return {"key_prefix": prefix, "event_handlers": [str(h) for h in handlers]}


def prepare_demo_dir(root: Path, *, shared_tmp: bool) -> None:
    """Make ``root`` an empty directory holding only the demo marker.

    An earlier demo's directory (it has the marker) is emptied; a missing one
    is created (mode 0700); anything else that is not empty is refused rather
    than mixed with the demo's data. In the shared temp dir the directory
    must also be a real directory owned by this user and closed to others
    (another user could have created the name first, or made it a symlink).
    """
    if root.is_symlink():
        raise DemoDirError(f"{root} is a symlink; refusing to use it for the demo")
    if root.exists():
        info = root.stat()
        if not stat.S_ISDIR(info.st_mode):
            raise DemoDirError(f"{root} exists and is not a directory")
        if shared_tmp and (info.st_uid != os.getuid() or info.st_mode & 0o077):
            raise DemoDirError(
                f"{root} belongs to another user or is open to others; remove it "
                "or run tracking demo --data-dir DIR"
            )
        if any(root.iterdir()):
            if read_marker(root) is None:
                raise DemoDirError(
                    f"{root} is not empty and holds no earlier demo; choose a new or "
                    "empty directory"
                )
            _check_not_served(root)
            shutil.rmtree(root)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker = {"key_prefix": KEY_PREFIX, "event_handlers": HANDLERS, "groups": list(GROUPS)}
    (root / MARKER_FILE).write_text(json.dumps(marker) + "\n")


def _check_not_served(root: Path) -> None:
    """Refuse to empty a demo directory whose embedded Redis still runs (a dashboard on it)."""
    from tracking.embedded import running_server_pid  # noqa: PLC0415

    pid = running_server_pid(root)
    if pid is not None:
        raise DemoDirError(
            f"the last demo's Redis (pid {pid}) is still serving {root}, probably for a "
            "tracking dashboard; stop that first"
        )


def sample_trackers() -> list[BaseTracker]:
    """The trackers every demo group gets (conditions are plain key/value checks)."""
    from tracking.conditions import KeyValueEQ  # noqa: PLC0415 - keeps the handler import light

    return [
        CountTracker("logins", [KeyValueEQ("kind", "login")], [3, 10]),
        AccumulationTracker("big-spender", [KeyValueEQ("kind", "purchase")], [100, 500], "amount"),
        CountTracker("shares", [KeyValueEQ("kind", "share")], 10, limiters=[CountLimiter(4)]),
    ]


def sample_events(count: int, seed: int = 7) -> list[tuple[str, dict[str, Any]]]:
    """A reproducible stream of events for the sample groups."""
    rng = random.Random(seed)
    events = []
    for _ in range(count):
        group = rng.choice(GROUPS)
        kind = rng.choices(["login", "purchase", "share", "page_view"], [4, 3, 2, 3])[0]
        data: dict[str, Any] = {"kind": kind}
        if kind == "purchase":
            data["amount"] = rng.choice([5, 10, 20, 50])
        events.append((group, data))
    return events


# -- the handlers (run in the worker) -------------------------------------------


@on_event()
def remember(event: dict[str, Any]) -> None:
    """Record every follow-up event, so the demo can show what handlers received."""
    runtime.redis_client().rpush(
        runtime.key(EVENTS_KEY),
        json.dumps([event["event_id"], event["group_id"], event["name"], event["event"]]),
    )


@on_event(EVENT_TRACKER_ALL_COMPLETED)
def grant_reward(event: dict[str, Any]) -> None:
    """What a real app does on ALL_COMPLETED: grant a reward (here: record it)."""
    runtime.redis_client().rpush(
        runtime.key(REWARDS_KEY), f"{event['group_id']} earned the {event['name']} badge"
    )


# -- the demo itself (runs in the CLI process) -------------------------------------


def _model(events: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[TrackerEvent]]:
    """Expected final state and fired events, from the in-memory reference engine."""
    from tracking.cache.memory import MemoryDataCache  # noqa: PLC0415
    from tracking.manager import TrackingManager  # noqa: PLC0415
    from tracking.store.memory import MemoryDataStore  # noqa: PLC0415

    manager = TrackingManager(MemoryDataCache(), MemoryDataStore())
    fired: list[TrackerEvent] = []

    def listen(event: Any) -> None:
        if isinstance(event, TrackerEvent):
            fired.append(event)

    for code in EVENT_ALL:
        manager.add_listener(code, listen)
    for group in GROUPS:
        manager.add_trackers(group, sample_trackers())
    for group, data in events:
        manager.track(group, data)
    return _snapshot(manager), fired


def _snapshot(manager: Any) -> dict[str, Any]:
    return {
        group: {
            t.name: (t.current_stage, t.progress, t.limited) for t in manager.get_trackers(group)
        }
        for group in GROUPS
    }


@contextlib.contextmanager
def _environment(data_dir: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    settings = Settings(
        data_dir=data_dir,
        key_prefix=KEY_PREFIX,
        event_handlers=HANDLERS,
        flush_interval_seconds=1.0,
        drain_interval_seconds=0.5,
    )
    env = procs.settings_env(
        data_dir=str(data_dir),
        key_prefix=KEY_PREFIX,
        event_handlers=HANDLERS,
        flush_interval_seconds=1.0,
        drain_interval_seconds=0.5,
    )
    # Zero configuration means the embedded parts, whatever this shell exports.
    env.update({"TRACKING_REDIS_URL": "", "TRACKING_BROKER_URL": "", "TRACKING_STORE_URL": ""})
    yield settings, env


def run_demo(events: int = 300, data_dir: Path | None = None, clean: bool = False) -> int:
    """Run the demo (see the module docstring); returns the process exit code.

    ``data_dir`` defaults to :func:`last_demo_dir`; ``clean`` removes it at
    the end. Raises :class:`DemoDirError` when the directory cannot be used.
    """
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from celery_app.app import configure  # noqa: PLC0415
    from tracking.embedded import EmbeddedRedis  # noqa: PLC0415

    console = Console()
    default_dir = data_dir is None
    root = (last_demo_dir() if data_dir is None else data_dir).absolute()
    prepare_demo_dir(root, shared_tmp=default_dir)
    stream = sample_events(events)
    expected_state, expected_events = _model(stream)
    children: list[Any] = []
    server = EmbeddedRedis(root)
    started = time.monotonic()
    try:
        with _environment(root) as (settings, env), console.status("Starting Redis, worker, beat"):
            server.start()
            configure(settings)
            worker_log = root / "worker.log"
            children.append(
                procs.spawn(
                    procs.worker_command(name="demo@%h", concurrency=2, loglevel="WARNING"),
                    env=env,
                    log=worker_log,
                    new_session=True,
                )
            )
            children.append(
                procs.spawn(
                    procs.celery_command(
                        "beat", "-l", "WARNING", "-s", str(root / "celerybeat-schedule")
                    ),
                    env=env,
                    log=root / "beat.log",
                    new_session=True,
                )
            )
            _wait_ready(children[0])
        console.print(
            f"[green]✓[/] embedded Redis at {server.socket_path}, worker (prefork -c 2) and beat "
            f"running; data in {root}"
        )
        from tasks import add_trackers, track  # noqa: PLC0415

        for group in GROUPS:
            add_trackers.delay(group, [t.to_spec() for t in sample_trackers()])
        manager = runtime.get_manager()
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as progress:
            sent = progress.add_task("track.delay  ", total=len(stream))
            applied = progress.add_task("applied      ", total=len(stream))
            _wait(lambda: all(len(manager.get_trackers(g)) == 3 for g in GROUPS), 30, "trackers")
            for index, (group, data) in enumerate(stream):
                track.delay(group, data, event_id=f"demo-{index}")
                progress.advance(sent)
            redis = runtime.redis_client()
            expected_count = len(expected_events)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                got = redis.llen(runtime.key(EVENTS_KEY))
                progress.update(applied, completed=_applied_estimate(redis, len(stream)))
                if _snapshot(manager) == expected_state and got >= expected_count:
                    progress.update(applied, completed=len(stream))
                    break
                time.sleep(0.2)
            else:
                console.print("[red]the workers did not reach the expected state in 60 s[/]")
                console.print((root / "worker.log").read_text()[-3000:])
                return 1
        _print_results(console, Table, manager, redis, expected_events)
        console.print(f"[green]✓[/] done in {time.monotonic() - started:.1f} s; stopping")
        console.print(_dashboard_hint(root, default_dir=default_dir, clean=clean))
        return 0
    finally:
        for child in reversed(children):
            procs.stop(child)
        runtime.use_settings(None)
        server.stop()
        if clean:
            shutil.rmtree(root, ignore_errors=True)


def _dashboard_hint(root: Path, *, default_dir: bool, clean: bool) -> str:
    """How to browse the demo's groups in ``tracking dashboard``."""
    if clean:
        return f"removed {root} (--clean)"
    if default_dir:
        from cli.browse import choose  # noqa: PLC0415 - browse imports this module

        plain = choose(demo=False, data_dir=None, key_prefix=None, environ=os.environ)
        shows_demo = plain.settings.data_dir == root
        command = "tracking dashboard" if shows_demo else "tracking dashboard --demo"
    else:
        command = f"tracking dashboard --data-dir {root}"
    return (
        f"data kept in {root} until the next demo; browse its groups: [bold]{command}[/] "
        "(http://127.0.0.1:5566/groups/alice)"
    )


def _applied_estimate(redis: Any, total: int) -> int:
    """How many demo events the tracking queue has handed out (for the progress bar)."""
    from celery_app.celeryconfig import QUEUE_TRACKING  # noqa: PLC0415

    waiting = int(redis.llen(QUEUE_TRACKING))
    return max(0, total - waiting)


def _wait_ready(worker: Any) -> None:
    import redis as redis_lib  # noqa: PLC0415

    from celery_app.app import app  # noqa: PLC0415

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError("the demo worker exited while starting; see worker.log")
        with contextlib.suppress(redis_lib.RedisError, OSError):
            if app.control.ping(timeout=0.5):
                return
    raise RuntimeError("the demo worker did not answer within 60 s; see worker.log")


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _print_results(
    console: Any, table_cls: Any, manager: Any, redis: Any, expected: list[TrackerEvent]
) -> None:
    received = [json.loads(r) for r in redis.lrange(runtime.key(EVENTS_KEY), 0, -1)]
    completed = {(g, n) for _, g, n, kind in received if kind == "ALL_COMPLETED"}
    table = table_cls(title="Trackers after the stream")
    for column in ("group", "tracker", "stage", "progress", "target", "state"):
        table.add_column(column)
    for group in GROUPS:
        current = {t.name: t for t in manager.get_trackers(group)}
        for spec in sample_trackers():
            tracker = current.get(spec.name)
            if tracker is None:
                state = "[green]completed[/]" if (group, spec.name) in completed else "gone"
                table.add_row(group, spec.name, "-", "-", str(spec.targets[-1]), state)
                continue
            state = "[yellow]limited[/]" if tracker.limited else "in progress"
            table.add_row(
                group,
                spec.name,
                f"{tracker.current_stage}/{len(tracker.targets)}",
                str(tracker.progress),
                str(tracker.target),
                state,
            )
    console.print(table)
    counts = Counter((g, kind) for _, g, _, kind in received)
    events_table = table_cls(title=f"Events the handlers received ({len(received)})")
    kinds = sorted({kind for _, _, _, kind in received})
    events_table.add_column("group")
    for kind in kinds:
        events_table.add_column(kind)
    for group in GROUPS:
        events_table.add_row(group, *(str(counts[(group, kind)]) for kind in kinds))
    console.print(events_table)
    for line in redis.lrange(runtime.key(REWARDS_KEY), 0, -1):
        console.print(f"  🏆 {line.decode()}")
    ids = [r[0] for r in received]
    dupes = len(ids) - len(set(ids))
    console.print(
        f"handlers ran {len(received)} times for {len(expected)} expected events"
        + (f" ([red]{dupes} duplicates[/])" if dupes else " (no duplicates)")
    )
