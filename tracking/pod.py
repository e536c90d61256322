"""Persistent ordered dicts: tastypy's ``POD`` and ``ProgressTracker``, crash-safe.

A :class:`PersistentOrderedDict` (``POD``) is a dict-like mapping that is
"translucently" persisted as JSON files in one directory, so a long-running
program can stop or crash and pick up where it left off. The API follows
tastypy (``mark_dirty``, ``update(key)``, ``sync``, ``hold``/``unhold``,
``revert``, ``copy``); :class:`ProgressTracker` adds the task bookkeeping
(``try_it``, ``mark_done``, ``percent_done`` ...).

Where it goes beyond tastypy is durability:

* Every file is replaced atomically: the new content goes to a temporary
  file in the same directory, is flushed and fsynced, renamed over the old
  file with :func:`os.replace`, and the directory is fsynced. A crash at any
  moment leaves each file either entirely old or entirely new, never torn.
* Keys live in fixed *slots* (slot ``s`` is stored in file
  ``s // file_size``), handed out in insertion order and never moved. A
  change therefore rewrites only the files holding changed or deleted keys,
  and a delete does not shift every later key into another file.

What a crash in the middle of :meth:`~PersistentOrderedDict.sync` can leave:
each data file is either its previous or its new version, independently of
the others. So after such a crash every value read back is one that was
complete at some sync or earlier, but a sync that touched several files may
be half applied (some keys new, others old). A key that was deleted and
re-added (it then gets a new slot in a later file) may be found in both its
old and new file; loading keeps the newer slot and rewrites the stale file at
the next sync. Leftover temporary files are ignored when loading and removed
when their writer process is gone.

On-disk layout of a POD directory::

    _pod_meta.json       {"format": "tracking.pod", "version": 1,
                          "file_size": 1000, "gzipped": false}
    0.json, 1.json, ...  a JSON array of [slot, key, value] entries, one per
                         line (``0.json.gz`` ... when gzipped)

``file_size`` and ``gzipped`` are fixed when the directory is created and
read back from the metadata file: the stored layout always wins (or the
files could not be read). Leaving ``gzipped``/``file_size`` at their defaults
when reopening silently means "as stored"; passing a value that differs from
the stored one (``file_size`` other than the stored and the default, or
``gzipped=True`` on a plain POD) emits a :class:`UserWarning`.

JSON only, as in tastypy: keys must be ``str`` or ``int`` and are stored as
strings (``pod[1]`` and ``pod["1"]`` are the same entry, as ``json.dumps``
would make them); values may nest ``dict`` (with ``str`` or ``int`` keys),
``list``, ``tuple`` (read back as a list), ``str``, ``int``, finite
``float``, ``bool`` and ``None``. Anything else (sets, arbitrary objects,
``bytes``, NaN or infinities, ``bool``/``float``/``None`` keys) raises
:class:`~tracking.errors.TrackingTypeError` on assignment; a value mutated
in place into something non-JSON is rejected by :meth:`sync` before any file
is written. In memory a value keeps the exact object that was assigned (a
tuple stays a tuple) until the POD is reloaded, as in tastypy.

Synchronisation follows tastypy: assigning, deleting, or *reading* a key
through ``pod[key]`` marks it dirty (so ``pod['k']['sub'] = 1`` is
persisted), and once ``sync_at`` keys are dirty the POD syncs by itself
unless :meth:`hold` is in effect. Dirty data is also synced by
:meth:`close` (or leaving a ``with`` block), when the POD is garbage
collected, and at normal interpreter exit (including an uncaught exception
or Ctrl-C, but not ``SIGKILL``, ``os._exit`` or a segfault). The exit hook
only holds a weak reference to the POD, so it never keeps one alive. Unlike
tastypy no ``SIGTERM`` handler is installed: a library must not take over
the signal handling of its host (a Celery worker, for one).

One POD object per directory at a time: two live objects on the same
directory (in one or several processes) overwrite each other's files.
:class:`tracking.store.file.FileDataStore` builds multi-process access on
top of a POD with a file lock and a reload before each write.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import re
import sys
import tempfile
import warnings
import weakref
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from pathlib import Path
from types import TracebackType
from typing import Any

from tracking._process import pid_alive
from tracking.errors import StoreError, TrackingTypeError, TrackingValueError

__all__ = [
    "DEFAULT_FILE_SIZE",
    "DEFAULT_SYNC_AT",
    "POD",
    "DuplicateKeyError",
    "PersistentOrderedDict",
    "ProgressTracker",
    "Tracker",
    "atomic_write_bytes",
    "fsync_directory",
]

DEFAULT_FILE_SIZE = 1000
DEFAULT_SYNC_AT = 1000

META_NAME = "_pod_meta.json"
FORMAT_NAME = "tracking.pod"
FORMAT_VERSION = 1

_DATA_FILE = re.compile(r"^(\d+)\.json(\.gz)?$")
# Temporary files are ".<target>.<pid>.<random>.tmp" (see atomic_write_bytes).
_TEMP_FILE = re.compile(r"^\..+\.(\d+)\.[a-z0-9_]+\.tmp$")
_MISSING: Any = object()


def _current_umask() -> int:
    """The process umask (read by setting and restoring it, once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; written files get the mode a plain open() would.
_FILE_MODE = 0o666 & ~_current_umask()


class DuplicateKeyError(TrackingValueError, KeyError):
    """:meth:`ProgressTracker.add` was given a key that already exists.

    Named as in tastypy; also a ``KeyError`` like other key problems.
    """

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0])


# --------------------------------------------------------------------------
# Atomic file primitives (also used by the file store)
# --------------------------------------------------------------------------


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


def _norm_key(key: object) -> str:
    """A POD key as stored: ``str`` as is, ``int`` as its decimal string."""
    if isinstance(key, str):
        return key if type(key) is str else str(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return str(int(key))
    raise TrackingTypeError(
        f"POD keys must be str or int (stored as str, like JSON), not {type(key).__name__}"
    )


def _check_json(value: object, where: str) -> None:
    """Raise :class:`TrackingTypeError` unless ``value`` is plain, finite JSON.

    Checked on assignment so the mistake surfaces where it is made, not at
    some later sync. ``where`` names the location for the error message.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TrackingTypeError(f"{where}: {value!r} is not valid JSON (must be finite)")
        return
    if isinstance(value, dict):
        for sub_key, sub_value in value.items():
            if isinstance(sub_key, bool) or not isinstance(sub_key, (str, int)):
                raise TrackingTypeError(
                    f"{where}: dict key {sub_key!r} must be str or int, "
                    f"not {type(sub_key).__name__}"
                )
            _check_json(sub_value, f"{where}[{sub_key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")
        return
    raise TrackingTypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")


# --------------------------------------------------------------------------
# Storage core
# --------------------------------------------------------------------------


class _Core:
    """The data and disk logic of one POD, kept apart from the mapping facade.

    The exit/GC finalizer holds a reference to the core only, so syncing at
    exit never keeps the POD object itself alive.
    """

    def __init__(self, path: Path, gzipped: bool, file_size: int) -> None:
        self.path = path
        self.gzipped = gzipped
        self.file_size = file_size
        self.values: dict[str, Any] = {}
        self.slots: dict[str, int] = {}
        # file index -> keys stored there, in slot order (dict as ordered set)
        self.files: dict[int, dict[str, None]] = {}
        self.next_slot = 0
        self.dirty: set[str] = set()
        self.dirty_files: set[int] = set()
        self.pending_deletes = 0

    # -- opening ----------------------------------------------------------

    @classmethod
    def open(cls, path: Path, gzipped: bool, file_size: int) -> _Core:
        """Open (creating if needed) the POD directory and load it."""
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create POD directory {str(path)!r}: {exc}") from exc
        meta = cls._read_meta(path)
        if meta is None:
            if any(_DATA_FILE.match(name) for name in os.listdir(path)):
                raise StoreError(
                    f"{str(path)!r} holds data files but no {META_NAME}: not a POD "
                    "directory, or an interrupted copy()"
                )
            cls._write_meta(path, gzipped, file_size)
        else:
            stored_gzipped, stored_size = meta
            explicit_gzipped = gzipped and not stored_gzipped  # False is the default
            explicit_size = file_size not in (stored_size, DEFAULT_FILE_SIZE)
            if explicit_gzipped or explicit_size:
                warnings.warn(
                    f"POD at {str(path)!r} was created with gzipped={stored_gzipped}, "
                    f"file_size={stored_size}; using those instead of gzipped={gzipped}, "
                    f"file_size={file_size}",
                    UserWarning,
                    stacklevel=3,
                )
            gzipped, file_size = stored_gzipped, stored_size
        core = cls(path, gzipped, file_size)
        core.remove_stale_temp_files()
        core.load()
        return core

    @staticmethod
    def _read_meta(path: Path) -> tuple[bool, int] | None:
        """The stored ``(gzipped, file_size)``, or None if there is no metadata yet."""
        meta_path = path / META_NAME
        try:
            raw = meta_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {str(meta_path)!r}: {exc}") from exc
        try:
            meta = json.loads(raw)
            if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format {meta.get('format')!r} {meta.get('version')!r}")
            gzipped, file_size = meta["gzipped"], meta["file_size"]
            if not isinstance(gzipped, bool) or type(file_size) is not int or file_size < 1:
                raise ValueError("bad gzipped/file_size")
        except (ValueError, KeyError, AttributeError) as exc:
            raise StoreError(f"{str(meta_path)!r} is not valid POD metadata: {exc}") from exc
        return gzipped, file_size

    @staticmethod
    def _write_meta(path: Path, gzipped: bool, file_size: int) -> None:
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "file_size": file_size,
            "gzipped": gzipped,
        }
        try:
            atomic_write_bytes(path / META_NAME, json.dumps(meta, indent=1).encode() + b"\n")
        except OSError as exc:
            raise StoreError(f"cannot write POD metadata in {str(path)!r}: {exc}") from exc

    def remove_stale_temp_files(self) -> None:
        """Delete temporary files left by writers that died (crash debris)."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path):
                match = _TEMP_FILE.match(name)
                if match and not pid_alive(int(match.group(1))):
                    with contextlib.suppress(OSError):
                        os.unlink(self.path / name)

    # -- loading ----------------------------------------------------------

    def data_path(self, index: int) -> Path:
        """Path of data file number ``index``."""
        return self.path / (f"{index}.json.gz" if self.gzipped else f"{index}.json")

    def load(self) -> None:
        """Replace the in-memory state with what is on disk; forget dirty marks."""
        entries: list[tuple[int, str, Any]] = []
        try:
            names = os.listdir(self.path)
        except OSError as exc:
            raise StoreError(f"cannot list POD directory {str(self.path)!r}: {exc}") from exc
        for name in names:
            match = _DATA_FILE.match(name)
            if match is None or bool(match.group(2)) != self.gzipped:
                continue
            entries.extend(self._read_file(int(match.group(1))))
        entries.sort(key=lambda entry: entry[0])

        self.values, self.slots, self.files = {}, {}, {}
        self.dirty, self.dirty_files, self.pending_deletes = set(), set(), 0
        for slot, key, value in entries:
            old_slot = self.slots.get(key)
            if old_slot is not None:
                # Deleted and re-added, and a crash kept both copies: the
                # higher slot is the newer one; drop the stale copy on disk
                # at the next sync.
                stale = old_slot // self.file_size
                del self.files[stale][key]
                self.dirty_files.add(stale)
                self.pending_deletes += 1
                del self.values[key]
            self.slots[key] = slot
            self.files.setdefault(slot // self.file_size, {})[key] = None
            self.values[key] = value
        self.next_slot = entries[-1][0] + 1 if entries else 0

    def _read_file(self, index: int) -> list[tuple[int, str, Any]]:
        path = self.data_path(index)
        try:
            raw = path.read_bytes()
            if self.gzipped:
                raw = gzip.decompress(raw)
            rows = json.loads(raw)
        except (OSError, EOFError, ValueError) as exc:
            raise StoreError(f"POD file {str(path)!r} cannot be read: {exc}") from exc
        if not isinstance(rows, list):
            raise StoreError(f"POD file {str(path)!r} is not a JSON array")
        entries: list[tuple[int, str, Any]] = []
        for row in rows:
            if (
                not isinstance(row, list)
                or len(row) != 3
                or type(row[0]) is not int
                or not isinstance(row[1], str)
                or row[0] // self.file_size != index
            ):
                raise StoreError(f"POD file {str(path)!r} has a malformed entry {row!r:.80}")
            entries.append((row[0], row[1], row[2]))
        return entries

    # -- changes ----------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """Assign ``value`` to ``key`` (a new key takes the next slot) and mark it dirty."""
        if key not in self.values:
            slot = self.next_slot
            self.next_slot += 1
            self.slots[key] = slot
            self.files.setdefault(slot // self.file_size, {})[key] = None
        self.values[key] = value
        self.dirty.add(key)

    def delete(self, key: str) -> None:
        """Remove ``key``; its file is rewritten at the next sync."""
        slot = self.slots.pop(key)
        del self.values[key]
        index = slot // self.file_size
        keys = self.files[index]
        del keys[key]
        if not keys:
            del self.files[index]
        self.dirty.discard(key)
        self.dirty_files.add(index)
        self.pending_deletes += 1

    def dirty_count(self) -> int:
        """Number of changes not yet on disk (what ``sync_at`` is compared to)."""
        return len(self.dirty) + self.pending_deletes

    # -- writing ----------------------------------------------------------

    def _encode(self, keys: Iterable[str], slot_of: Mapping[str, int], gzipped: bool) -> bytes:
        """One data file's bytes; raises TrackingTypeError for a non-JSON value."""
        lines = []
        for key in keys:
            try:
                lines.append(
                    json.dumps(
                        [slot_of[key], key, self.values[key]],
                        ensure_ascii=False,
                        allow_nan=False,
                        separators=(",", ":"),
                    )
                )
            except (TypeError, ValueError) as exc:
                raise TrackingTypeError(
                    f"value of key {key!r} is no longer JSON-serialisable: {exc}"
                ) from exc
        data = ("[\n" + ",\n".join(lines) + "\n]\n").encode()
        return gzip.compress(data, compresslevel=6, mtime=0) if gzipped else data

    def sync(self) -> None:
        """Write every file holding a dirty or deleted key, each one atomically.

        All files are encoded before the first write, so a value that is not
        JSON any more fails the sync without touching the disk.
        """
        if not self.dirty and not self.dirty_files:
            return
        touched = {self.slots[key] // self.file_size for key in self.dirty} | self.dirty_files
        payloads: list[tuple[int, bytes | None]] = []
        for index in sorted(touched):
            keys = self.files.get(index)
            payloads.append((index, self._encode(keys, self.slots, self.gzipped) if keys else None))
        try:
            for index, payload in payloads:
                if payload is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.data_path(index))
                else:
                    atomic_write_bytes(self.data_path(index), payload, sync_dir=False)
            fsync_directory(self.path)
        except OSError as exc:
            raise StoreError(f"cannot sync POD at {str(self.path)!r}: {exc}") from exc
        self.dirty.clear()
        self.dirty_files.clear()
        self.pending_deletes = 0

    def copy_to(self, path: Path, file_size: int, gzipped: bool) -> None:
        """Write everything to a new directory and make it this POD's home.

        Slots are renumbered compactly in the copy. The metadata file is
        written last, so an interrupted copy is refused on open rather than
        looking like a complete but smaller POD.
        """
        if path.resolve() == self.path.resolve():
            raise TrackingValueError("copy() needs a different directory than the current one")
        path.mkdir(parents=True, exist_ok=True)
        if any(name == META_NAME or _DATA_FILE.match(name) for name in os.listdir(path)):
            raise TrackingValueError(f"copy() target {str(path)!r} already holds a POD")
        order = list(self.values)
        slots = {key: slot for slot, key in enumerate(order)}
        files: dict[int, dict[str, None]] = {}
        for key, slot in slots.items():
            files.setdefault(slot // file_size, {})[key] = None
        payloads = [(index, self._encode(keys, slots, gzipped)) for index, keys in files.items()]
        suffix = ".json.gz" if gzipped else ".json"
        try:
            for index, payload in payloads:
                atomic_write_bytes(path / f"{index}{suffix}", payload, sync_dir=False)
            fsync_directory(path)
        except OSError as exc:
            raise StoreError(f"cannot copy POD to {str(path)!r}: {exc}") from exc
        self._write_meta(path, gzipped, file_size)
        self.path, self.file_size, self.gzipped = path, file_size, gzipped
        self.slots, self.files, self.next_slot = slots, files, len(order)
        self.dirty.clear()
        self.dirty_files.clear()
        self.pending_deletes = 0


def _final_sync(core: _Core) -> None:
    """Finalizer: sync a POD that is being collected or outlived by the interpreter.

    Errors cannot propagate from here, so they are reported on stderr.
    """
    try:
        core.sync()
    except Exception as exc:
        print(f"tracking.pod: could not sync {str(core.path)!r} at exit: {exc}", file=sys.stderr)


# --------------------------------------------------------------------------
# The mapping
# --------------------------------------------------------------------------


class _PODValues(ValuesView[Any]):
    """Values in key order, read without marking anything dirty."""

    def __init__(self, pod: PersistentOrderedDict) -> None:
        super().__init__(pod)
        self._pod = pod

    def __iter__(self) -> Iterator[Any]:
        return iter(self._pod._core.values.values())


class _PODItems(ItemsView[str, Any]):
    """``(key, value)`` pairs in key order, read without marking anything dirty."""

    def __init__(self, pod: PersistentOrderedDict) -> None:
        super().__init__(pod)
        self._pod = pod

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self._pod._core.values.items())

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        values = self._pod._core.values
        try:
            key = _norm_key(item[0])
        except TrackingTypeError:
            return False
        return key in values and values[key] == item[1]


class PersistentOrderedDict(MutableMapping[str, Any]):
    """A JSON-only, insertion-ordered mapping persisted under the directory ``path``.

    ``init`` is an optional mapping (or iterable of pairs) assigned on
    opening, as tastypy's ``init``. ``gzipped`` and ``file_size`` (values
    per file) only matter when the directory is created; ``sync_at`` is how
    many dirty keys trigger an automatic sync. See the module docstring for
    the file layout, the JSON rules and the crash guarantees.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        init: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None,
        gzipped: bool = False,
        file_size: int = DEFAULT_FILE_SIZE,
        sync_at: int = DEFAULT_SYNC_AT,
    ) -> None:
        if type(file_size) is not int or file_size < 1:
            raise TrackingValueError(f"file_size must be a positive int, not {file_size!r}")
        if type(sync_at) is not int or sync_at < 1:
            raise TrackingValueError(f"sync_at must be a positive int, not {sync_at!r}")
        self._core = _Core.open(Path(path), bool(gzipped), file_size)
        self.sync_at = sync_at
        self._hold = False
        # Syncs at garbage collection and at interpreter exit; references
        # only the core, so it never keeps this object alive.
        self._finalizer = weakref.finalize(self, _final_sync, self._core)
        if init is not None:
            self.update(init)

    # -- introspection ----------------------------------------------------

    @property
    def path(self) -> Path:
        """The directory currently synced to (changes after :meth:`copy`)."""
        return self._core.path

    @property
    def file_size(self) -> int:
        """Values per data file, as stored in the directory's metadata."""
        return self._core.file_size

    @property
    def gzipped(self) -> bool:
        """Whether data files are gzipped, as stored in the metadata."""
        return self._core.gzipped

    def peek(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` (or ``default``) *without* marking it dirty.

        For read-only access, where ``pod[key]`` would cause a needless
        rewrite of the key's file at the next sync.
        """
        return self._core.values.get(_norm_key(key), default)

    def dirty(self) -> set[str]:
        """The keys currently marked out of sync (a copy)."""
        return set(self._core.dirty)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._core.path)!r}, {len(self)} keys)"

    # -- mapping protocol -------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        """The value of ``key``, which is marked dirty since it may be mutated next.

        As in tastypy, a sync that is due happens *before* marking, so the
        key stays dirty for the mutation that presumably follows.
        """
        name = _norm_key(key)
        core = self._core
        if name not in core.values:
            raise KeyError(key)
        self._maybe_sync(preemptive=1)
        core.dirty.add(name)
        return core.values[name]

    def __setitem__(self, key: Any, value: Any) -> None:
        name = _norm_key(key)
        _check_json(value, f"value of key {name!r}")
        self._core.set(name, value)
        self._maybe_sync()

    def __delitem__(self, key: Any) -> None:
        name = _norm_key(key)
        if name not in self._core.values:
            raise KeyError(key)
        self._core.delete(name)
        self._maybe_sync()

    def __iter__(self) -> Iterator[str]:
        return iter(self._core.values)

    def __len__(self) -> int:
        return len(self._core.values)

    def __contains__(self, key: object) -> bool:
        try:
            return _norm_key(key) in self._core.values
        except TrackingTypeError:
            return False

    def keys(self) -> KeysView[str]:
        """Keys in insertion order (a live view, like a Python 3 dict; ``list()`` it
        for tastypy's list)."""
        return KeysView(self)

    def values(self) -> ValuesView[Any]:
        """Values in the order of :meth:`keys`; reading them marks nothing dirty."""
        return _PODValues(self)

    def items(self) -> ItemsView[str, Any]:
        """``(key, value)`` pairs in insertion order; reading marks nothing dirty."""
        return _PODItems(self)

    def iteritems(self) -> Iterator[tuple[str, Any]]:
        """tastypy's iterator of ``(key, value)`` pairs in insertion order."""
        return iter(self._core.values.items())

    # -- synchronisation --------------------------------------------------

    def _maybe_sync(self, preemptive: int = 0) -> None:
        if not self._hold and self._core.dirty_count() >= self.sync_at - preemptive:
            self._core.sync()

    def mark_dirty(self, key: Any) -> None:
        """Force ``key`` to be rewritten at the next sync (after an in-place change
        made through another reference)."""
        name = _norm_key(key)
        if name not in self._core.values:
            raise KeyError(key)
        self._core.dirty.add(name)
        self._maybe_sync()

    def update(self, other: Any = _MISSING, /, **kwargs: Any) -> None:
        """tastypy's ``update(key)``: write ``key`` to disk now.

        Given a ``str``/``int`` key this marks it dirty and syncs at once
        (with all other dirty keys), even under :meth:`hold`; this is what
        tastypy documents and why it shadows ``dict.update``. Given a mapping
        or an iterable of pairs (and/or keyword arguments) it assigns them,
        like ``dict.update``, which is how ``init`` is applied.
        """
        if isinstance(other, (str, int)) and not isinstance(other, bool):
            self.mark_dirty(other)
            self._core.sync()
            return
        if other is not _MISSING:
            pairs = other.items() if isinstance(other, Mapping) else other
            for key, value in pairs:
                self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def sync(self) -> None:
        """Write all dirty keys to disk now (even under :meth:`hold`)."""
        self._core.sync()

    def hold(self) -> None:
        """Suspend automatic syncing at ``sync_at`` (exit and explicit syncs still run)."""
        self._hold = True

    def unhold(self) -> None:
        """Resume automatic syncing and sync the outstanding changes now."""
        self._hold = False
        self._core.sync()

    def revert(self) -> None:
        """Reload everything from disk, discarding unsynced changes and dirty marks."""
        self._core.load()

    def copy(self, path: str | os.PathLike[str], file_size: int, gzipped: bool = False) -> None:
        """Sync everything to the new directory ``path`` and keep syncing there.

        The old directory is left as it was at its last sync. Happens at once,
        whatever :meth:`hold` says. ``path`` must not already hold a POD.
        """
        if type(file_size) is not int or file_size < 1:
            raise TrackingValueError(f"file_size must be a positive int, not {file_size!r}")
        self._core.copy_to(Path(path), file_size, bool(gzipped))

    def close(self) -> None:
        """Sync outstanding changes. The object stays usable afterwards."""
        self._core.sync()

    def __enter__(self) -> PersistentOrderedDict:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


POD = PersistentOrderedDict


# --------------------------------------------------------------------------
# Progress tracker
# --------------------------------------------------------------------------


def _check_entry(key: str, value: object) -> None:
    """A tracker value must be a dict with ``_done`` (bool) and ``_tries`` (int >= 0)."""
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("_done"), bool)
        or type(value.get("_tries")) is not int
        or value["_tries"] < 0
    ):
        raise TrackingTypeError(
            f"tracker value of {key!r} must be a dict with '_done' (bool) and "
            f"'_tries' (int >= 0), got {value!r:.80}"
        )


class ProgressTracker(PersistentOrderedDict):
    """A POD of tasks: each value is a dict with ``_done`` and ``_tries``.

    Other keys may be stored alongside (results, notes). ``max_tries`` caps
    :meth:`try_it`; None means unlimited. The counts (:meth:`num_done` ...)
    are computed from the values each time, so they stay right even when
    entries are edited directly through ``tracker[key]``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_tries: int | None = None,
        gzipped: bool = False,
        file_size: int = DEFAULT_FILE_SIZE,
        sync_at: int = DEFAULT_SYNC_AT,
    ) -> None:
        if max_tries is not None and (type(max_tries) is not int or max_tries < 0):
            raise TrackingValueError(f"max_tries must be None or an int >= 0, not {max_tries!r}")
        super().__init__(path, gzipped=gzipped, file_size=file_size, sync_at=sync_at)
        self.max_tries = max_tries
        self._check_all()

    def _check_all(self) -> None:
        for key, value in self._core.values.items():
            _check_entry(key, value)

    def __setitem__(self, key: Any, value: Any) -> None:
        _check_entry(_norm_key(key), value)
        super().__setitem__(key, value)

    def revert(self) -> None:
        """Reload from disk (see :meth:`PersistentOrderedDict.revert`) and re-check entries."""
        super().revert()
        self._check_all()

    def _entry(self, key: Any) -> tuple[str, dict[str, Any]]:
        """The stored entry of ``key``, without marking it dirty."""
        name = _norm_key(key)
        try:
            return name, self._core.values[name]
        except KeyError:
            raise KeyError(key) from None

    def _touch(self, name: str) -> None:
        self._core.dirty.add(name)
        self._maybe_sync()

    # -- adding and checking ------------------------------------------------

    def add(self, key: Any) -> None:
        """Add ``key`` as not done with zero tries; :class:`DuplicateKeyError` if present."""
        if key in self:
            raise DuplicateKeyError(f"tracker key {_norm_key(key)!r} already exists")
        self[key] = {"_done": False, "_tries": 0}

    def add_if_absent(self, key: Any) -> None:
        """Like :meth:`add`, but do nothing if ``key`` exists."""
        if key not in self:
            self.add(key)

    def check(self, key: Any) -> bool:
        """True if ``key`` is done; False if not done or not in the tracker."""
        name = _norm_key(key)
        entry = self._core.values.get(name)
        return bool(entry is not None and entry["_done"])

    def check_or_add(self, key: Any) -> bool:
        """True if ``key`` is done; otherwise add it if absent and return False."""
        if key not in self:
            self.add(key)
            return False
        return self.check(key)

    def try_it(self, key: Any) -> bool:
        """Whether to attempt ``key`` now, counting the attempt if so.

        Adds the key if absent; returns False if it is done or has been tried
        ``max_tries`` times already; otherwise increments its tries and
        returns True.
        """
        self.add_if_absent(key)
        name, entry = self._entry(key)
        if entry["_done"]:
            return False
        if self.max_tries is not None and entry["_tries"] >= self.max_tries:
            return False
        entry["_tries"] += 1
        self._touch(name)
        return True

    # -- tries ----------------------------------------------------------------

    def tries(self, key: Any) -> int:
        """How many times ``key`` has been tried."""
        return int(self._entry(key)[1]["_tries"])

    def increment_tries(self, key: Any) -> None:
        """Add one to the tries of ``key``."""
        name, entry = self._entry(key)
        entry["_tries"] += 1
        self._touch(name)

    def decrement_tries(self, key: Any) -> None:
        """Take one from the tries of ``key``; tries never go below zero."""
        name, entry = self._entry(key)
        if entry["_tries"] <= 0:
            raise TrackingValueError(f"tracker key {name!r} has no tries to decrement")
        entry["_tries"] -= 1
        self._touch(name)

    def reset_tries(self, key: Any) -> None:
        """Set the tries of ``key`` back to zero."""
        name, entry = self._entry(key)
        entry["_tries"] = 0
        self._touch(name)

    # -- done -----------------------------------------------------------------

    def mark_done(self, key: Any) -> None:
        """Mark ``key`` done."""
        name, entry = self._entry(key)
        entry["_done"] = True
        self._touch(name)

    def mark_not_done(self, key: Any) -> None:
        """Mark ``key`` not done."""
        name, entry = self._entry(key)
        entry["_done"] = False
        self._touch(name)

    # -- statistics -------------------------------------------------------------

    def num_done(self) -> int:
        """Number of entries marked done."""
        return sum(1 for entry in self._core.values.values() if entry["_done"])

    def num_tried(self) -> int:
        """Number of entries tried at least once."""
        return sum(1 for entry in self._core.values.values() if entry["_tries"] > 0)

    def fraction_done(self) -> float:
        """Fraction (0 to 1) of entries done; 0.0 for an empty tracker."""
        total = len(self)
        return self.num_done() / total if total else 0.0

    def fraction_tried(self) -> float:
        """Fraction (0 to 1) of entries tried at least once; 0.0 for an empty tracker."""
        total = len(self)
        return self.num_tried() / total if total else 0.0

    @staticmethod
    def percent(fraction: float, decimals: int = 2) -> str:
        """``fraction`` as a percentage string with ``decimals`` decimals, e.g. ``'34.70 %'``."""
        return f"{100 * fraction:.{decimals}f} %"

    def percent_done(self, decimals: int = 2) -> str:
        """Percentage of entries done, e.g. ``'34.70 %'``."""
        return self.percent(self.fraction_done(), decimals)

    def percent_not_done(self, decimals: int = 2) -> str:
        """Percentage of entries not done (``'0.00 %'`` when empty: nothing is pending)."""
        return self.percent(1 - self.fraction_done() if len(self) else 0.0, decimals)

    def percent_tried(self, decimals: int = 2) -> str:
        """Percentage of entries tried at least once."""
        return self.percent(self.fraction_tried(), decimals)

    def percent_not_tried(self, decimals: int = 2) -> str:
        """Percentage of entries never tried (``'0.00 %'`` when empty)."""
        return self.percent(1 - self.fraction_tried() if len(self) else 0.0, decimals)


Tracker = ProgressTracker
