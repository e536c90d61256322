"""The mapping facade of a POD: tastypy's ``PersistentOrderedDict`` API.

Validates keys and values (JSON only), marks keys dirty as tastypy does,
and decides when to sync; the data and the disk work are in
:class:`tracking.pod.core.PODCore`. See :mod:`tracking.pod` for the rules.
"""

from __future__ import annotations

import os
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

from tracking.errors import TrackingTypeError, TrackingValueError
from tracking.pod.core import (
    DEFAULT_FILE_SIZE,
    DEFAULT_SYNC_AT,
    PODCore,
    check_json,
    final_sync,
    norm_key,
)

__all__ = ["POD", "PersistentOrderedDict"]

_MISSING: Any = object()


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
            key = norm_key(item[0])
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
        self._core = PODCore.open(Path(path), bool(gzipped), file_size)
        self.sync_at = sync_at
        self._hold = False
        # Syncs at garbage collection and at interpreter exit; references
        # only the core, so it never keeps this object alive.
        self._finalizer = weakref.finalize(self, final_sync, self._core)
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
        return self._core.values.get(norm_key(key), default)

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
        name = norm_key(key)
        core = self._core
        if name not in core.values:
            raise KeyError(key)
        self._maybe_sync(preemptive=1)
        core.dirty.add(name)
        return core.values[name]

    def __setitem__(self, key: Any, value: Any) -> None:
        name = norm_key(key)
        check_json(value, f"value of key {name!r}")
        self._core.set(name, value)
        self._maybe_sync()

    def __delitem__(self, key: Any) -> None:
        name = norm_key(key)
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
            return norm_key(key) in self._core.values
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
        name = norm_key(key)
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
