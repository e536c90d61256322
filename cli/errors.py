"""How the command line fails: one line on stderr and a documented exit code.

Every command runs its body under :func:`guard`, which turns the errors an
operator can cause or meet (a missing file, bad JSON, an unknown tracker, a
Redis or broker that does not answer) into ``error: <what>`` and the exit
code below, never a traceback. Anything else is a bug: it is reported in one
line too, with exit code 70, and ``TRACKING_DEBUG=1`` shows the traceback.
The README's CLI section lists the same codes.
"""

from __future__ import annotations

import contextlib
import enum
import os
import traceback
from collections.abc import Iterator

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)


class ExitCode(enum.IntEnum):
    """The exit codes of ``tracking`` (stable: scripts test them); see :data:`MEANING`."""

    OK = 0
    INVALID_LINES = 1
    USAGE = 2
    NO_FILE = 3
    BAD_INPUT = 4
    NOT_FOUND = 5
    CONFLICT = 6
    UNAVAILABLE = 7
    INTERNAL = 70


MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.INVALID_LINES: "replay: some lines are invalid (the valid ones were sent)",
    ExitCode.USAGE: "bad usage: unknown option, missing argument, bad option value",
    ExitCode.NO_FILE: "a file named on the command line is missing or unreadable",
    ExitCode.BAD_INPUT: "invalid input: not JSON, an invalid spec, event, name or policy",
    ExitCode.NOT_FOUND: "no such group or tracker",
    ExitCode.CONFLICT: "a tracker of that name already exists in the group",
    ExitCode.UNAVAILABLE: "Redis, the store or the broker is unreachable or failing",
    ExitCode.INTERNAL: "unexpected error, a bug (TRACKING_DEBUG=1 shows the traceback)",
}


def exit_codes_help() -> str:
    """The exit-code table as a click help paragraph (kept verbatim by ``\\b``)."""
    rows = "\n".join(f"  {int(code):>2}  {text}" for code, text in MEANING.items())
    return f"\b\nExit codes (an error is one line on stderr):\n{rows}"


class CliError(Exception):
    """A failure with its message and exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _unavailable_types() -> tuple[type[BaseException], ...]:
    import redis.exceptions  # noqa: PLC0415 - only when something failed

    from tracking.errors import BackendError, MissingDependencyError  # noqa: PLC0415

    kinds: list[type[BaseException]] = [
        BackendError,
        MissingDependencyError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        ConnectionError,
        TimeoutError,
    ]
    with contextlib.suppress(ImportError):
        from kombu.exceptions import OperationalError  # noqa: PLC0415

        kinds.append(OperationalError)
    return tuple(kinds)


def classify(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one-line message for ``exc``."""
    from tracking.errors import (  # noqa: PLC0415
        ConflictingNameError,
        TrackerNotFoundError,
        TrackingTypeError,
        TrackingValueError,
    )

    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, ConflictingNameError):
        return ExitCode.CONFLICT, str(exc)
    if isinstance(exc, TrackerNotFoundError):
        return ExitCode.NOT_FOUND, str(exc)
    if isinstance(exc, TrackingTypeError | TrackingValueError):
        return ExitCode.BAD_INPUT, str(exc)
    if isinstance(exc, _unavailable_types()):
        detail = str(exc) or type(exc).__name__
        return ExitCode.UNAVAILABLE, f"cannot reach Redis, the store or the broker: {detail}"
    return ExitCode.INTERNAL, f"unexpected {type(exc).__name__}: {exc}"


def one_line(message: str) -> str:
    return " ".join(message.split())


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Run a command body; turn its failures into one line and an exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise  # typer's own exits and usage errors (exit code 2)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False, highlight=False)
        raise typer.Exit(130) from None
    except Exception as exc:
        code, message = classify(exc)
        if code is ExitCode.INTERNAL and os.environ.get("TRACKING_DEBUG"):
            traceback.print_exc()
        err.print(f"error: {one_line(message)}", markup=False, highlight=False)
        raise typer.Exit(int(code)) from None
