"""``tracking replay``: send an event log through ``track_many`` tasks, resumably.

Progress is a :class:`tracking.pod.ProgressTracker` keyed by batch
(``lines:<first>-<last>``) beside the log: a rerun skips batches already
handed to the broker. Events without an ``event_id`` get
``replay:<file hash>:<line>``, so a batch sent twice (a crash between the
publish and the progress write, or a rerun with another ``--batch``) still
counts once within the dedupe window. Every line is validated on every run,
so invalid lines are reported (and the exit code set) the same way on a run
and on a rerun.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cli.errors import CliError, ExitCode, guard, one_line

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

#: How many invalid lines are listed (the count is always printed).
MAX_LISTED = 20

HELP = """Send an event log (JSON lines) through track_many tasks, resumably.

\b
PATH holds one JSON object per line; blank lines are skipped:
  {"group_id": "user-42", "data": {"kind": "login"}, "event_id": "ev-991"}
  group_id   the group the event is tracked for (a non-empty string)
  data       the event itself (a JSON object)
  event_id   optional; default replay:<file hash>:<line number>

Progress is kept in PATH.progress/ (or --progress-dir): a rerun skips the
batches already sent, and the event ids make a batch sent twice count once
within the dedupe window. Invalid lines are listed on stderr on every run
and make the exit code 1; the valid lines are sent anyway.
"""


def parse_line(raw: str, number: int, digest: str) -> dict[str, Any]:
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


def _read(path: Path) -> tuple[bytes, str]:
    try:
        raw = path.read_bytes()
        return raw, raw.decode()
    except UnicodeDecodeError as exc:
        raise CliError(ExitCode.BAD_INPUT, f"{path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise CliError(ExitCode.NO_FILE, f"cannot read {path}: {exc.strerror or exc}") from None


def replay(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="The event log.", show_default=False)
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only validate; send nothing.")
    ] = False,
    batch: Annotated[
        int, typer.Option(metavar="N", min=1, max=10_000, help="Events per task.")
    ] = 500,
    progress_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Where progress is kept (default: PATH.progress/)."),
    ] = None,
) -> None:
    with guard():
        _replay(path, dry_run, batch, progress_dir)


replay.__doc__ = HELP


def _replay(path: Path, dry_run: bool, batch: int, progress_dir: Path | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    from tracking.pod import ProgressTracker  # noqa: PLC0415

    data, text = _read(path)
    digest = hashlib.sha256(data).hexdigest()[:16]
    lines = [(n, raw) for n, raw in enumerate(text.splitlines(), 1) if raw.strip()]
    parsed: dict[int, dict[str, Any]] = {}
    invalid: list[str] = []
    for number, raw in lines:
        try:
            parsed[number] = parse_line(raw, number, digest)
        except ValueError as exc:
            invalid.append(one_line(str(exc)))
    if dry_run:
        console.print(f"{len(parsed)} valid, {len(invalid)} invalid", markup=False)
        _report(invalid)
        return
    from tasks import track_many  # noqa: PLC0415 - Celery only when sending

    chunks = [lines[i : i + batch] for i in range(0, len(lines), batch)]
    done = ProgressTracker(progress_dir or Path(f"{path}.progress"))
    sent = skipped = 0
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err
        ) as progress:
            bar = progress.add_task("replaying", total=len(lines))
            for chunk in chunks:
                key = f"lines:{chunk[0][0]}-{chunk[-1][0]}"
                items = [parsed[n] for n, _ in chunk if n in parsed]
                if done.check(key):
                    skipped += len(items)
                else:
                    done.add_if_absent(key)
                    done.increment_tries(key)
                    if items:
                        track_many.delay(items)
                    done.mark_done(key)
                    done.sync()
                    sent += len(items)
                progress.advance(bar, len(chunk))
    finally:
        done.close()
    console.print(f"{sent} sent, {skipped} already sent, {len(invalid)} invalid", markup=False)
    _report(invalid)


def _report(invalid: list[str]) -> None:
    """List invalid lines on stderr and exit 1 when there are any (same on every run)."""
    if not invalid:
        return
    for message in invalid[:MAX_LISTED]:
        err.print(f"invalid {message}", markup=False, highlight=False)
    if len(invalid) > MAX_LISTED:
        err.print(f"... and {len(invalid) - MAX_LISTED} more invalid lines", markup=False)
    raise typer.Exit(int(ExitCode.INVALID_LINES))
