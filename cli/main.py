"""The ``tracking`` command line (typer + rich).

``tracking demo``
    The zero-configuration tour: embedded Redis, a worker and beat, sample
    trackers, a stream of events, the results, a clean stop.
``tracking worker`` / ``tracking beat`` / ``tracking flower``
    ``celery -A celery_app ...`` with the product's queues and defaults;
    the process is replaced by celery (signals reach it directly).
``tracking dashboard``
    The read-only web dashboard (:mod:`dashboard`) on 127.0.0.1:5566.
``tracking add|show|reset|remove``
    Administration of a running deployment, see :mod:`cli.admin`.
``tracking replay events.jsonl``
    Feed an event log through ``track_many`` tasks, resumably, see
    :mod:`cli.replay`.

Errors are one line on stderr with a documented exit code
(:class:`cli.errors.ExitCode`), never a traceback.

Layering: this package sits above the layers; Celery is imported only
inside the commands that need it, so ``tracking --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Annotated

import typer

from cli import admin, replay
from cli.errors import CliError, ExitCode, exit_codes_help, guard
from cli.procs import ALL_QUEUES

HELP = f"Condition-based progress tracking on Celery.\n\n{exit_codes_help()}"

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: typer's rich panels show "<bool>" for flags (even --help)
    # and squeeze long options into a fixed-width column.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"max_content_width": 120},
)


# -- running the service ------------------------------------------------------------


@app.command()
def demo(
    events: Annotated[int, typer.Option(min=1, max=100_000, help="Events to send.")] = 300,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Run in this directory (new, empty or an earlier demo's) instead of the "
            "per-user one under the temp dir."
        ),
    ] = None,
    clean: Annotated[
        bool, typer.Option("--clean", help="Remove the demo's files at the end.")
    ] = False,
) -> None:
    """Run everything on this machine with no servers: worker, beat, trackers, events.

    The last run's files stay (in the temp dir, emptied by the next run) so
    that tracking dashboard can show its groups.
    """
    with guard():
        from cli.demo import DemoDirError, run_demo  # noqa: PLC0415 - Celery only inside commands

        try:
            code = run_demo(events=events, data_dir=data_dir, clean=clean)
        except DemoDirError as exc:
            raise CliError(ExitCode.CONFLICT, str(exc)) from None
    raise typer.Exit(code)


def _exec_celery(args: list[str]) -> None:
    from cli import procs  # noqa: PLC0415

    cmd = procs.celery_command(*args)
    sys.stdout.flush()
    with guard():
        os.execv(cmd[0], cmd)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option("-c", "--concurrency", min=1)] = 2,
    queues: Annotated[str, typer.Option("-Q", "--queues")] = ALL_QUEUES,
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "INFO",
) -> None:
    """A prefork worker on all queues (extra arguments go to 'celery worker')."""
    _exec_celery(["worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel, *ctx.args])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def beat(
    ctx: typer.Context,
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "INFO",
) -> None:
    """Celery beat with the product's schedule (flush, outbox drain, expiry, resets)."""
    from config.settings import get_settings  # noqa: PLC0415

    with guard():
        schedule = get_settings().data_dir / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
    _exec_celery(["beat", "-l", loglevel, "-s", str(schedule), *ctx.args])


LOOPBACK = ("127.0.0.1", "localhost", "::1")
_AUTH_OPTIONS = ("--basic-auth", "--basic_auth", "--auth")


def flower_args(
    port: int,
    address: str,
    unauthenticated_api: bool,
    extra: list[str],
    environ: MutableMapping[str, str],
) -> list[str]:
    """Flower's arguments, after refusing set-ups that would expose it without auth.

    Never unauthenticated by default: ``FLOWER_UNAUTHENTICATED_API`` is
    removed from ``environ`` (so an inherited variable cannot open the
    API) and set only with ``--unauthenticated-api``, which is refused off
    loopback; listening on any other address needs Flower's basic auth
    (``--basic-auth=user:password`` or ``FLOWER_BASIC_AUTH``) or OAuth
    (``--auth=REGEX`` with ``--auth_provider``, or ``FLOWER_AUTH``).
    """
    environ.pop("FLOWER_UNAUTHENTICATED_API", None)
    if any(arg.startswith(("--address", "--port")) for arg in extra):
        raise typer.BadParameter("use tracking flower's own --address/--port")
    loopback = address in LOOPBACK or address.startswith("127.")
    has_auth = any(arg.startswith(_AUTH_OPTIONS) for arg in extra) or bool(
        environ.get("FLOWER_BASIC_AUTH") or environ.get("FLOWER_AUTH")
    )
    if unauthenticated_api:
        if not loopback:
            raise typer.BadParameter("--unauthenticated-api is for a loopback address only")
        environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    elif not loopback and not has_auth:
        raise typer.BadParameter(
            f"Flower would listen on {address} without authentication; pass "
            "--basic-auth=USER:PASSWORD (or --auth=REGEX with an OAuth --auth_provider)"
        )
    return ["flower", f"--port={port}", f"--address={address}", *extra]


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5555,
    address: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    unauthenticated_api: Annotated[
        bool,
        typer.Option(
            "--unauthenticated-api", help="Open Flower's HTTP API without auth (loopback only)."
        ),
    ] = False,
) -> None:
    """Flower on the same broker (dashboard at http://ADDRESS:PORT); see docs/security.md.

    Extra options go to Flower, e.g. ``--basic-auth=user:password``.
    """
    args = flower_args(port, address, unauthenticated_api, list(ctx.args), os.environ)
    _exec_celery(args)


@app.command()
def dashboard(
    host: Annotated[
        str, typer.Option(help="Listen address (only loopback unless credentials are set).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5566,
    demo: Annotated[bool, typer.Option("--demo", help="Show the last tracking demo run.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Override TRACKING_DATA_DIR (a demo's dir works too).")
    ] = None,
    key_prefix: Annotated[str | None, typer.Option(help="Override TRACKING_KEY_PREFIX.")] = None,
) -> None:
    """The read-only web dashboard (http://HOST:PORT), over the workers' settings.

    With no TRACKING_* configuration and no groups of your own yet, it shows
    the last tracking demo run (and says so on every page).
    """
    with guard():
        from cli.browse import NoDemoError, choose  # noqa: PLC0415
        from dashboard.auth import ExposureError  # noqa: PLC0415 - web stack only here
        from dashboard.server import serve  # noqa: PLC0415

        try:
            target = choose(demo=demo, data_dir=data_dir, key_prefix=key_prefix, environ=os.environ)
        except NoDemoError as exc:
            raise CliError(ExitCode.NOT_FOUND, str(exc)) from None
        if target.notice:
            typer.echo(f"{target.notice} Files: {target.settings.data_dir}")
        try:
            serve(host, port, target.settings, notice=target.notice)
        except ExposureError as exc:
            raise CliError(ExitCode.USAGE, str(exc)) from None


# -- administration and replay (cli/admin.py, cli/replay.py) -----------------------

app.command()(admin.add)
app.command()(admin.show)
app.command()(admin.reset)
app.command()(admin.remove)
app.command()(replay.replay)


if __name__ == "__main__":  # pragma: no cover
    app()
