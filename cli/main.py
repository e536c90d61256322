"""The ``tracking`` command line (typer + rich).

``tracking demo``
    The zero-configuration tour: embedded Redis, a worker and beat, sample
    trackers, a stream of events, the results, a clean stop.
``tracking worker`` / ``tracking beat`` / ``tracking flower``
    ``celery -A celery_app ...`` with the product's queues and defaults;
    the process is replaced by celery (signals reach it directly).
``tracking add|show|reset|remove``
    Administration of a running deployment. These call the
    :class:`~tracking.manager.TrackingManager` directly against the
    configured Redis and store (the same objects the workers use), not
    through tasks: the answer is immediate and errors are shown at once,
    no result backend is needed, and they work while workers are down.
    Events they fire (ADDED, RESET, REMOVED) go through the outbox to the
    handlers like any other (beat's drain publishes them).
``tracking replay events.jsonl``
    Feed an event log (one ``{"group_id", "data", "event_id"?}`` per
    line) through ``track_many`` tasks, resumably.

Layering: this package sits above the layers; Celery is imported only
inside the commands that need it, so ``tracking --help`` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Condition-based progress tracking on Celery.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {message}")
    return typer.Exit(code=2)


# -- running the service ------------------------------------------------------------


@app.command()
def demo(
    events: Annotated[int, typer.Option(min=1, max=100_000, help="Events to send.")] = 300,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the demo's files here (default: a temp dir).")
    ] = None,
) -> None:
    """Run everything on this machine with no servers: worker, beat, trackers, events."""
    from cli.demo import run_demo  # noqa: PLC0415 - Celery only inside commands

    code = run_demo(events=events, data_dir=data_dir, keep=data_dir is not None)
    raise typer.Exit(code)


def _exec_celery(args: list[str]) -> None:
    from cli import procs  # noqa: PLC0415

    cmd = procs.celery_command(*args)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option("-c", "--concurrency", min=1)] = 2,
    queues: Annotated[str, typer.Option("-Q", "--queues")] = "tracking,admin,events,maintenance",
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "INFO",
) -> None:
    """A prefork worker on all queues (extra arguments go to ``celery worker``)."""
    _exec_celery(["worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel, *ctx.args])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def beat(
    ctx: typer.Context,
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "INFO",
) -> None:
    """Celery beat with the product's schedule (flush, outbox drain, expiry, resets)."""
    from config.settings import get_settings  # noqa: PLC0415

    schedule = get_settings().data_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    _exec_celery(["beat", "-l", loglevel, "-s", str(schedule), *ctx.args])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5555,
    address: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    unauthenticated_api: Annotated[
        bool, typer.Option(help="Open Flower's HTTP API without auth (local use only).")
    ] = False,
) -> None:
    """Flower on the same broker (dashboard at http://ADDRESS:PORT)."""
    if unauthenticated_api:
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    _exec_celery(["flower", f"--port={port}", f"--address={address}", *ctx.args])


# -- administration --------------------------------------------------------------


def _manager() -> Any:
    from config.settings import get_settings  # noqa: PLC0415
    from tracking.factory import manager_from_settings  # noqa: PLC0415

    return manager_from_settings(get_settings())


def _redact(url: str) -> str:
    """``url`` without its password (safe to print)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=user + host))


def _sources() -> str:
    """Which Redis, store and key prefix this process reads (for ``show``)."""
    from config.settings import get_settings  # noqa: PLC0415
    from tracking.factory import redis_url  # noqa: PLC0415

    settings = get_settings()
    redis = _redact(redis_url(settings))
    if not (settings.redis_url or "").strip():
        redis += f" (embedded, data dir {settings.data_dir})"
    return (
        f"Redis {redis}, store {_redact(settings.resolved_store_url())}, "
        f"key prefix {settings.key_prefix!r}"
    )


def _load_specs(spec: str) -> list[dict[str, Any]]:
    text = Path(spec[1:]).read_text() if spec.startswith("@") else spec
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"the spec is not JSON: {exc}") from None
    specs = value if isinstance(value, list) else [value]
    if not all(isinstance(s, dict) for s in specs):
        raise _fail("a spec is a JSON object (or a list of them)")
    return specs


@app.command()
def add(
    group_id: str,
    spec: Annotated[str, typer.Argument(help="Tracker spec JSON, a list of them, or @file.")],
    expire: Annotated[int | None, typer.Option(help="Seconds until the trackers expire.")] = None,
) -> None:
    """Add trackers (JSON specs) to a group."""
    from tracking.errors import TrackingError  # noqa: PLC0415
    from tracking.spec import tracker_from_spec  # noqa: PLC0415

    try:
        trackers = [tracker_from_spec(s) for s in _load_specs(spec)]
        _manager().add_trackers(group_id, trackers, expire=expire)
    except TrackingError as exc:
        raise _fail(str(exc)) from None
    console.print(f"added {', '.join(t.name for t in trackers)} to {group_id}")


@app.command()
def show(
    group_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON specs with state.")] = False,
) -> None:
    """Show a group's trackers and their progress, and which Redis and store it read."""
    from tracking.errors import TrackingError  # noqa: PLC0415

    try:
        trackers = _manager().get_trackers(group_id)
    except TrackingError as exc:
        raise _fail(str(exc)) from None
    source = f"read from {_sources()}"
    if as_json:
        typer.echo(json.dumps([t.to_spec(include_state=True) for t in trackers], indent=2))
        err.print(source, markup=False, highlight=False)
        return
    table = Table(title=f"{group_id}: {len(trackers)} tracker(s)")
    for column in ("tracker", "type", "stage", "progress", "target", "state"):
        table.add_column(column)
    for t in trackers:
        state = "limited" if t.limited else ("completed" if t.completed else "in progress")
        table.add_row(
            t.name,
            type(t).__name__,
            f"{t.current_stage}/{len(t.targets)}",
            str(t.progress),
            str(t.target),
            state,
        )
    console.print(table)
    console.print(source, markup=False, highlight=False, soft_wrap=True)


@app.command()
def reset(
    group_id: str,
    name: Annotated[str | None, typer.Argument(help="Tracker (default: all).")] = None,
    policy: Annotated[int | None, typer.Option(help="ResetPolicy flags (int).")] = None,
) -> None:
    """Reset a group's trackers (RESET events go to the handlers)."""
    from tracking.errors import TrackingError  # noqa: PLC0415

    manager = _manager()
    try:
        names = [name] if name else [t.name for t in manager.get_trackers(group_id)]
        done = [n for n in names if manager.reset_tracker(group_id, n, policy)]
    except TrackingError as exc:
        raise _fail(str(exc)) from None
    console.print(f"reset {', '.join(done) or 'nothing'} in {group_id}")


@app.command()
def remove(
    group_id: str,
    name: Annotated[str | None, typer.Argument(help="Tracker (default: all).")] = None,
) -> None:
    """Remove trackers from a group (REMOVED events go to the handlers)."""
    from tracking.errors import TrackingError  # noqa: PLC0415

    try:
        removed = _manager().remove_tracker(group_id, name)
    except TrackingError as exc:
        raise _fail(str(exc)) from None
    console.print(f"removed {', '.join(t.name for t in removed) or 'nothing'} from {group_id}")


# -- replay ------------------------------------------------------------------------


def _parse_line(raw: str, number: int, digest: str) -> dict[str, Any]:
    """One log line as a ``track_many`` item, with a deterministic event id."""
    from tracking._validate import check_name, validate_event  # noqa: PLC0415
    from tracking.errors import TrackingError  # noqa: PLC0415

    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {number}: not JSON ({exc})") from None
    if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
        raise ValueError(f'line {number}: expected {{"group_id": ..., "data": {{...}}}}')
    try:
        check_name(item.get("group_id"), "group_id")
        validate_event(item["data"])
        event_id = item.get("event_id") or f"replay:{digest}:{number}"
        check_name(event_id, "event_id")
    except TrackingError as exc:
        raise ValueError(f"line {number}: {exc}") from None
    return {"group_id": item["group_id"], "data": item["data"], "event_id": event_id}


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    dry_run: Annotated[bool, typer.Option(help="Only validate; send nothing.")] = False,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Events per task.")] = 500,
    progress_dir: Annotated[
        Path | None, typer.Option(help="Where progress is kept (default: PATH.progress/).")
    ] = None,
) -> None:
    """Send an event log (JSON lines) through track_many tasks, resumably.

    Progress is a :class:`tracking.pod.ProgressTracker` keyed by batch
    (``lines:<first>-<last>``): a rerun skips batches already handed to the
    broker. Events without an ``event_id`` get ``replay:<file hash>:<line>``,
    so a batch sent twice (a crash between publish and the progress write,
    or a rerun with another ``--batch``) still counts once within the
    dedupe window.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from tracking.pod import ProgressTracker  # noqa: PLC0415

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    lines = [(n, raw) for n, raw in enumerate(path.read_text().splitlines(), 1) if raw.strip()]
    chunks = [lines[i : i + batch] for i in range(0, len(lines), batch)]
    done = None if dry_run else ProgressTracker(progress_dir or Path(f"{path}.progress"))
    send = None
    if not dry_run:
        from tasks import track_many  # noqa: PLC0415

        send = track_many
    invalid: list[str] = []
    sent = skipped = 0
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        bar = progress.add_task("validating" if dry_run else "replaying", total=len(lines))
        for chunk in chunks:
            key = f"lines:{chunk[0][0]}-{chunk[-1][0]}"
            if done is not None and done.check(key):
                skipped += len(chunk)
                progress.advance(bar, len(chunk))
                continue
            items = []
            for number, raw in chunk:
                try:
                    items.append(_parse_line(raw, number, digest))
                except ValueError as exc:
                    invalid.append(str(exc))
            if send is not None and done is not None:
                done.add_if_absent(key)
                done.increment_tries(key)
                if items:
                    send.delay(items)
                done.mark_done(key)
                done.sync()
                sent += len(items)
            progress.advance(bar, len(chunk))
    for message in invalid[:20]:
        err.print(f"[yellow]skipped[/] {message}")
    verb = "valid" if dry_run else "sent"
    console.print(
        f"{len(lines) - len(invalid) - skipped} {verb}, {skipped} already done, "
        f"{len(invalid)} invalid"
    )
    if done is not None:
        done.close()
    if invalid:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
