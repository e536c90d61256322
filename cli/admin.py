"""``tracking add|show|reset|remove``: administration of a running deployment.

These call :class:`~tracking.manager.TrackingManager` directly against the
configured Redis and store (the objects the workers use), not through
tasks: the answer is immediate, errors show at once, no result backend is
needed, and they work while workers are down. The events they fire (ADDED,
RESET, REMOVED) reach the handlers through the outbox like any other.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.table import Table

from cli.errors import CliError, ExitCode, guard

if TYPE_CHECKING:
    from tracking.manager import TrackingManager
    from tracking.trackers import BaseTracker

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

GroupArg = Annotated[str, typer.Argument(metavar="GROUP", help="The group id.", show_default=False)]


def _manager() -> TrackingManager:
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
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CliError(ExitCode.NO_FILE, f"cannot read {path}: {reason}") from None
    else:
        text = spec
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(ExitCode.BAD_INPUT, f"the spec is not JSON: {exc}") from None
    specs = value if isinstance(value, list) else [value]
    if not specs or not all(isinstance(s, dict) for s in specs):
        raise CliError(ExitCode.BAD_INPUT, "a spec is a JSON object (or a non-empty list of them)")
    return specs


def _existing(manager: TrackingManager, group_id: str, name: str | None) -> list[BaseTracker]:
    """The named tracker (or all of the group's); NOT_FOUND when there is none."""
    trackers = manager.get_trackers(group_id)
    if not trackers:
        raise CliError(ExitCode.NOT_FOUND, f"no trackers in group {group_id!r}")
    if name is None:
        return trackers
    found = [t for t in trackers if t.name == name]
    if not found:
        raise CliError(ExitCode.NOT_FOUND, f"no tracker named {name!r} in group {group_id!r}")
    return found


def _describe(tracker: BaseTracker) -> str:
    state = tracker.state
    status = "completed" if state.completed else ("limited" if state.limited else "open")
    return (
        f"stage {tracker.current_stage}/{len(tracker.targets)}, "
        f"progress {state.progress}/{tracker.target}, {status}"
    )


def add(
    group_id: GroupArg,
    spec: Annotated[
        str,
        typer.Argument(
            metavar="SPEC",
            help="A tracker spec (JSON object), a JSON list of them, or @FILE holding either.",
            show_default=False,
        ),
    ],
    expire: Annotated[
        int | None, typer.Option(metavar="SECONDS", help="Seconds until the trackers expire.")
    ] = None,
) -> None:
    """Add trackers (JSON specs) to a group."""
    with guard():
        from tracking.spec import tracker_from_spec  # noqa: PLC0415

        trackers = [tracker_from_spec(s) for s in _load_specs(spec)]
        _manager().add_trackers(group_id, trackers, expire=expire)
        console.print(f"added {', '.join(t.name for t in trackers)} to {group_id}", markup=False)


def show(
    group_id: GroupArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON specs with state.")] = False,
) -> None:
    """Show a group's trackers and their progress, and which Redis and store it read."""
    with guard():
        trackers = _manager().get_trackers(group_id)
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
        console.print(source, markup=False, highlight=False)
        if not trackers:
            hint = _demo_hint(group_id)
            if hint:
                console.print(hint, markup=False, highlight=False)


def _demo_hint(group_id: str) -> str | None:
    """Where a demo group lives, when ``show`` found nothing under the settings."""
    from cli import demo  # noqa: PLC0415 - only on this path

    root = demo.last_demo_dir()
    if group_id not in demo.GROUPS or demo.read_marker(root) is None:
        return None
    return (
        f"{group_id} is a group of tracking demo, which keeps its own data: "
        f"TRACKING_DATA_DIR={root} TRACKING_KEY_PREFIX={demo.KEY_PREFIX} "
        f"tracking show {group_id} (or tracking dashboard --demo)"
    )


class Policy(enum.StrEnum):
    """dictrack's ``ResetPolicy`` by name."""

    ALL = "ALL"
    PROGRESS = "PROGRESS"
    LIMITER = "LIMITER"
    NONE = "NONE"


#: What ``--clear`` may name; the default clears all three.
CLEARABLE = ("progress", "limiter", "stage")


def _parse_clear(clear: str | None, policy: Policy | None) -> set[str]:
    if clear is not None and policy is not None:
        raise typer.BadParameter("give --clear or --policy, not both", param_hint="--clear")
    if policy is not None:
        return {
            Policy.ALL: {"progress", "limiter"},
            Policy.PROGRESS: {"progress"},
            Policy.LIMITER: {"limiter"},
            Policy.NONE: set(),
        }[policy]
    if clear is None or clear.strip().lower() == "all":
        return set(CLEARABLE)
    parts = {p.strip().lower() for p in clear.split(",") if p.strip()}
    if parts == {"none"}:
        return set()
    unknown = sorted(parts - set(CLEARABLE))
    if unknown:
        raise typer.BadParameter(
            f"unknown {', '.join(unknown)} (choose from {', '.join(CLEARABLE)}, all, none)",
            param_hint="--clear",
        )
    if "stage" in parts:
        parts.add("progress")  # progress counts toward the stage's target
    return parts


def reset(
    group_id: GroupArg,
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="The tracker (default: every tracker of GROUP)."),
    ] = None,
    clear: Annotated[
        str | None,
        typer.Option(
            metavar="WHAT",
            help="What to clear, comma-separated: progress, limiter, stage (back to the "
            "first stage; implies progress), or all, or none. Default: all.",
        ),
    ] = None,
    policy: Annotated[
        Policy | None,
        typer.Option(
            case_sensitive=False,
            help="Instead of --clear: dictrack's ResetPolicy by name (the stage is kept).",
        ),
    ] = None,
) -> None:
    """Reset trackers and print their state before and after.

    By default progress and limiters are cleared and the tracker goes back to
    its first stage. A RESET event goes to the handlers for each tracker.
    """
    with guard():
        from tracking.model import ResetPolicy  # noqa: PLC0415

        parts = _parse_clear(clear, policy)
        flags = ResetPolicy.NONE
        if "progress" in parts:
            flags |= ResetPolicy.PROGRESS
        if "limiter" in parts:
            flags |= ResetPolicy.LIMITER
        manager = _manager()
        for before in _existing(manager, group_id, name):
            _reset_one(manager, group_id, before, flags, back_to_first="stage" in parts)


def _reset_one(
    manager: TrackingManager, group_id: str, before: BaseTracker, flags: int, back_to_first: bool
) -> None:
    from tracking.trackers import BaseTracker  # noqa: PLC0415

    if back_to_first and before.state.stage > 0:
        # The reset itself keeps the stage (dictrack's semantics): rewrite the
        # state first, so the RESET event below reports the first stage.
        state = before.state.copy()
        state.stage, state.progress, state.completed = 0, 0, False
        manager.update_tracker(group_id, BaseTracker.from_parts(before.definition, state))
    if not manager.reset_tracker(group_id, before.name, flags):
        raise CliError(
            ExitCode.NOT_FOUND, f"no tracker named {before.name!r} in group {group_id!r}"
        )
    after = manager.get_trackers(group_id, before.name)
    now = _describe(after[0]) if after else "gone"
    console.print(f"reset {before.name} in {group_id}: {_describe(before)} -> {now}", markup=False)


def remove(
    group_id: GroupArg,
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="The tracker (default: every tracker of GROUP)."),
    ] = None,
) -> None:
    """Remove trackers from a group (REMOVED events go to the handlers)."""
    with guard():
        manager = _manager()
        _existing(manager, group_id, name)
        removed = manager.remove_tracker(group_id, name)
        if not removed:  # removed by someone else meanwhile
            what = f"tracker named {name!r}" if name else "trackers"
            raise CliError(ExitCode.NOT_FOUND, f"no {what} in group {group_id!r}")
        console.print(f"removed {', '.join(t.name for t in removed)} from {group_id}", markup=False)
