"""Crash-safe file replacement: temporary file, fsync, rename, directory fsync.

The POD writes every data file this way, and the file store
(:mod:`tracking.store.file`) writes its generation marker the same way, so
a crash at any moment leaves each file either entirely old or entirely new.
Temporary files are named ``.<target>.<pid>.<random>.tmp`` in the target's
directory: the pid lets :func:`remove_stale_temp_files` tell the debris of a
dead writer from a file another live process is still writing.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from tracking._process import pid_alive

__all__ = ["atomic_write_bytes", "fsync_directory", "remove_stale_temp_files"]

# Temporary files are ".<target>.<pid>.<random>.tmp" (see atomic_write_bytes).
_TEMP_FILE = re.compile(r"^\..+\.(\d+)\.[a-z0-9_]+\.tmp$")


def _current_umask() -> int:
    """The process umask (read by setting and restoring it, once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; written files get the mode a plain open() would.
_FILE_MODE = 0o666 & ~_current_umask()


def fsync_directory(path: Path) -> None:
    """Make renames and unlinks inside ``path`` durable (POSIX needs a dir fsync)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers and crashes see old or new only.

    The data is written to a temporary file in the same directory (same file
    system, so the rename is atomic), flushed and fsynced, then renamed over
    ``path``. With ``sync_dir`` the directory is fsynced too, making the
    rename itself durable; callers writing many files pass ``False`` and
    call :func:`fsync_directory` once at the end.
    """
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    if sync_dir:
        fsync_directory(path.parent)


def remove_stale_temp_files(directory: Path) -> None:
    """Delete temporary files in ``directory`` left by writers that died (crash debris)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            match = _TEMP_FILE.match(name)
            if match and not pid_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(directory / name)
