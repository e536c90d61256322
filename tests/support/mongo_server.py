"""Launch a Mongo wire-compatible test server (mongoeco) for the test suite.

This script runs under a separate Python >= 3.13 virtualenv (see
``tests/support/mongo_env.py``), because mongoeco needs 3.13 while the
project runs on 3.11. It is *not* MongoDB: it is a MongoDB wire-protocol
server written in Python that real pymongo clients talk to over TCP.

Protocol with the parent process:

* once listening, print exactly one JSON line to stdout:
  ``{"uri": "mongodb://127.0.0.1:PORT/?directConnection=true", "pid": N}``;
* stop when stdin reaches EOF (the parent closed the pipe or died), on
  SIGTERM/SIGINT, or (Linux) when the parent dies (``PR_SET_PDEATHSIG``),
  so a crashed test run never leaves a server behind.

Usage: ``python mongo_server.py [--engine memory|sqlite] [--sqlite-path FILE]
[--port N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import importlib
import json
import os
import signal
import sys
import threading
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the parent exits (best effort, Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before prctl took effect: then we were reparented.
    if os.getppid() == 1:
        raise SystemExit(0)


def _make_engine(kind: str, sqlite_path: str | None) -> Any:
    """Build the mongoeco storage engine: memory (fast) or SQLite (survives restarts)."""
    engines = importlib.import_module("mongoeco.engines")
    if kind == "memory":
        return engines.MemoryEngine()
    if not sqlite_path:
        raise SystemExit("--sqlite-path FILE is required with --engine sqlite")
    return engines.SQLiteEngine(sqlite_path)


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Block reading stdin in a thread; EOF means the parent is gone or done."""
    with contextlib.suppress(Exception):
        while sys.stdin.buffer.read(1024):
            pass
    with contextlib.suppress(RuntimeError):  # loop already closed
        loop.call_soon_threadsafe(stop.set)


async def _serve(args: argparse.Namespace) -> None:
    # Imported by name: mongoeco exists only in the 3.13 venv, not where mypy runs.
    proxy = importlib.import_module("mongoeco.wire.proxy")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = proxy.AsyncMongoEcoProxyServer(
        engine=_make_engine(args.engine, args.sqlite_path),
        host=args.host,
        port=args.port,
        mongodb_dialect="7.0",
        pymongo_profile="4.19",  # "4.20" is refused by mongoeco 4.11; 4.19 serves pymongo 4.20
    )
    address = await server.start()
    try:
        sys.stdout.write(json.dumps({"uri": address.uri, "pid": os.getpid()}) + "\n")
        sys.stdout.flush()
        threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, start the server and block until told to stop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--sqlite-path", default=None, help="SQLite file (engine sqlite)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    _die_with_parent()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
