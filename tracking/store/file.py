"""The embedded default store: tracker records in a crash-safe POD directory.

``FileDataStore("file:///var/lib/tracking")`` (or ``file://relative/dir`` or
a plain path) keeps one POD entry per (group id, tracker name), keyed
``f"{group_id}\\x1f{name}"`` and holding :meth:`TrackerRecord.to_json`. An
in-memory index group -> names (rebuilt whenever the POD is loaded) lets
:meth:`load_group` read one group without scanning every record.

Durability: :meth:`save` and :meth:`remove` sync the POD before returning,
and every POD file is replaced atomically (see :mod:`tracking.pod.atomic`), so an
acknowledged write survives a crash and a crash never leaves a torn file.
A crash *during* a save may apply part of that batch; saving the same
records again is always safe (the ``seq`` rule makes it idempotent).

Concurrency: several processes *on one machine* may open the same
directory. Every write takes an exclusive ``fcntl.flock`` on ``.lock`` in
the directory, reloads the POD from disk if another process wrote since
this one last looked (a ``generation`` token file changes before every write),
applies the change and syncs, all under the lock; reads take a shared lock
and reload the same way. ``flock`` is not reliable on network file systems,
so the file store is for one machine; use the Mongo store across machines.

Layout of the store directory::

    .lock          lock file (empty)
    generation     random token rewritten (atomically) before every write
    records/       the POD (``_pod_meta.json``, ``0.json``, ...)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tracking.errors import StoreError, TrackingValueError
from tracking.pod.atomic import atomic_write_bytes
from tracking.pod.core import DEFAULT_FILE_SIZE
from tracking.pod.mapping import POD
from tracking.store.base import DataStore, TrackerRecord
from tracking.store.registry import builtin_schemes

SEPARATOR = "\x1f"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_file_url(url_or_path: str) -> tuple[Path, dict[str, str]]:
    """Directory and query options of ``file:///abs``, ``file://rel/dir`` or a plain path.

    ``file://rel/dir`` is read as the relative path ``rel/dir`` (the URL
    "host" is taken as the first path component), which is what people mean
    when they write it. Query options (``?file_size=500&gzipped=1``) are
    returned as a dict.
    """
    if not url_or_path.startswith("file:"):
        return Path(url_or_path), {}
    parts = urlsplit(url_or_path)
    if parts.scheme != "file":
        raise TrackingValueError(f"not a file:// URL: {url_or_path!r}")
    raw = unquote(parts.netloc + parts.path)
    if not raw:
        raise TrackingValueError(f"file:// URL without a path: {url_or_path!r}")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return Path(raw), options


def _key(group_id: str, name: str) -> str:
    return f"{group_id}{SEPARATOR}{name}"


class FileDataStore(DataStore):
    """A :class:`DataStore` in a directory on local disk (see the module docstring).

    ``file_size`` and ``gzipped`` set the POD layout when the directory is
    created (they can also come from the URL query); an existing store keeps
    its stored layout.
    """

    schemes = builtin_schemes("tracking.store.file:FileDataStore")

    def __init__(
        self,
        url_or_path: str,
        *,
        file_size: int | None = None,
        gzipped: bool | None = None,
    ) -> None:
        path, options = parse_file_url(url_or_path)
        if file_size is None:
            try:
                file_size = int(options.get("file_size", DEFAULT_FILE_SIZE))
            except ValueError as exc:
                raise TrackingValueError(f"bad file_size in {url_or_path!r}") from exc
        if gzipped is None:
            flag = options.get("gzipped", "0").lower()
            if flag not in _TRUE | _FALSE:
                raise TrackingValueError(f"bad gzipped in {url_or_path!r}")
            gzipped = flag in _TRUE
        self.path = path
        self._thread_lock = threading.RLock()
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._lock_fd: int | None = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StoreError(f"cannot open file store at {str(path)!r}: {exc}") from exc
        self._generation = ""
        self._index: dict[str, dict[str, None]] = {}
        with self._locked(exclusive=True):
            # sync_at is irrelevant: every write syncs explicitly under the lock.
            self._pod = POD(path / "records", gzipped=gzipped, file_size=file_size, sync_at=2**62)
            self._pod.hold()
            self._generation = self._read_generation()
            self._rebuild_index()

    # -- locking and freshness ------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the thread lock and the directory's flock (shared or exclusive)."""
        with self._thread_lock:
            if self._lock_fd is None:
                raise StoreError(f"file store at {str(self.path)!r} is closed")
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            except OSError as exc:
                raise StoreError(f"cannot lock file store {str(self.path)!r}: {exc}") from exc
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _read_generation(self) -> str:
        try:
            return (self.path / "generation").read_text()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise StoreError(f"cannot read file store generation: {exc}") from exc

    def _refresh(self) -> None:
        """Reload from disk if another process (or object) wrote since we last looked."""
        generation = self._read_generation()
        if generation != self._generation:
            self._pod.revert()
            self._rebuild_index()
            self._generation = generation

    def _rebuild_index(self) -> None:
        index: dict[str, dict[str, None]] = {}
        for key in self._pod:
            group_id, _, name = key.partition(SEPARATOR)
            index.setdefault(group_id, {})[name] = None
        self._index = index

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Exclusive lock, fresh state; on any failure, fall back to what is on disk.

        A failed write (bad data, full disk) may leave memory ahead of disk;
        reloading makes sure it is neither served nor persisted later.
        """
        with self._locked(exclusive=True):
            self._refresh()
            try:
                yield
            except BaseException:
                with contextlib.suppress(Exception):
                    self._pod.revert()
                    self._rebuild_index()
                raise

    def _commit(self) -> None:
        """Publish a new generation, then sync the POD.

        The generation goes first: if this process dies during the sync,
        the others still see a new generation and reload whatever made it
        to disk, instead of keeping (and later writing back) a stale view.
        """
        generation = uuid.uuid4().hex
        try:
            atomic_write_bytes(self.path / "generation", generation.encode())
        except OSError as exc:
            raise StoreError(f"file store write failed at {str(self.path)!r}: {exc}") from exc
        self._pod.sync()
        self._generation = generation

    # -- DataStore ------------------------------------------------------------

    def load_group(self, group_id: str, now: float | None = None) -> list[TrackerRecord]:
        now = time.time() if now is None else now
        with self._locked(exclusive=False):
            self._refresh()
            peek = self._pod.peek  # read without marking keys dirty
            raw = [peek(_key(group_id, name)) for name in self._index.get(group_id, ())]
        records = [TrackerRecord.from_json(item) for item in raw]
        return [r for r in records if r.expire_at is None or r.expire_at > now]

    def save(self, records: Sequence[TrackerRecord]) -> None:
        if not records:
            return
        payloads: list[tuple[str, str, dict[str, Any]]] = [
            (r.group_id, r.name, r.to_json()) for r in records
        ]
        with self._writing():
            changed = False
            for group_id, name, data in payloads:
                key = _key(group_id, name)
                current = self._pod.peek(key)
                if current is not None and int(current.get("seq", 0)) > data["seq"]:
                    continue
                self._pod[key] = data  # raises TrackingTypeError for non-JSON data
                self._index.setdefault(group_id, {})[name] = None
                changed = True
            if changed:
                self._commit()

    def remove(self, group_id: str, names: Sequence[str] | None = None) -> int:
        with self._writing():
            present = self._index.get(group_id)
            if not present:
                return 0
            targets = list(present) if names is None else [n for n in names if n in present]
            for name in targets:
                del self._pod[_key(group_id, name)]
                del present[name]
            if not present:
                del self._index[group_id]
            if targets:
                self._commit()
            return len(targets)

    def group_ids(self) -> list[str]:
        with self._locked(exclusive=False):
            self._refresh()
            return list(self._index)

    def flush(self) -> None:
        """Delete every record in this store's directory (other files are left alone)."""
        with self._writing():
            if len(self._pod):
                self._pod.clear()
                self._index = {}
                self._commit()

    def close(self) -> None:
        """Release the lock file. Everything is already on disk."""
        with self._thread_lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __repr__(self) -> str:
        return f"FileDataStore({str(self.path)!r})"
