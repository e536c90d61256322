"""The storage core of a POD: in-memory state, slots, loading and atomic syncs.

:class:`PODCore` holds the values and knows the on-disk layout described in
:mod:`tracking.pod`; the mapping facade (:mod:`tracking.pod.mapping`) only
validates and forwards. Kept apart so the exit/GC finalizer can reference
the core alone and never keep the POD object itself alive.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tracking.errors import StoreError, TrackingTypeError, TrackingValueError
from tracking.pod.atomic import atomic_write_bytes, fsync_directory, remove_stale_temp_files

DEFAULT_FILE_SIZE = 1000
DEFAULT_SYNC_AT = 1000

META_NAME = "_pod_meta.json"
FORMAT_NAME = "tracking.pod"
FORMAT_VERSION = 1

_DATA_FILE = re.compile(r"^(\d+)\.json(\.gz)?$")


def norm_key(key: object) -> str:
    """A POD key as stored: ``str`` as is, ``int`` as its decimal string."""
    if isinstance(key, str):
        return key if type(key) is str else str(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return str(int(key))
    raise TrackingTypeError(
        f"POD keys must be str or int (stored as str, like JSON), not {type(key).__name__}"
    )


def check_json(value: object, where: str) -> None:
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
            check_json(sub_value, f"{where}[{sub_key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_json(item, f"{where}[{index}]")
        return
    raise TrackingTypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")


class PODCore:
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
    def open(cls, path: Path, gzipped: bool, file_size: int) -> PODCore:
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
        remove_stale_temp_files(self.path)

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


def final_sync(core: PODCore) -> None:
    """Finalizer: sync a POD that is being collected or outlived by the interpreter.

    Errors cannot propagate from here, so they are reported on stderr.
    """
    try:
        core.sync()
    except Exception as exc:
        print(f"tracking.pod: could not sync {str(core.path)!r} at exit: {exc}", file=sys.stderr)
