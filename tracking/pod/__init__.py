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

from tracking.pod.atomic import atomic_write_bytes, fsync_directory
from tracking.pod.core import DEFAULT_FILE_SIZE, DEFAULT_SYNC_AT, META_NAME
from tracking.pod.mapping import POD, PersistentOrderedDict
from tracking.pod.progress import DuplicateKeyError, ProgressTracker, Tracker

__all__ = [
    "DEFAULT_FILE_SIZE",
    "DEFAULT_SYNC_AT",
    "META_NAME",
    "POD",
    "DuplicateKeyError",
    "PersistentOrderedDict",
    "ProgressTracker",
    "Tracker",
    "atomic_write_bytes",
    "fsync_directory",
]
