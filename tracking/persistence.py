"""Moving state between the cache (working set) and the store (record).

- :func:`load_group` turns store records into cache entries (cold load),
  with the group's dedupe records (event ids applied within the window),
  which :func:`snapshot_records` persists with the group at every flush.
- :func:`flush_group` writes one dirty group to the store and clears its
  dirty mark only if the store acknowledged the write and nothing changed
  in the cache meanwhile; a failed write leaves the mark, so it is retried.
- :func:`flush_dirty` is the write-behind pass (beat runs it every few
  seconds): it never raises for one group's failure, it reports it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

from tracking.cache.base import CachedTracker, DataCache, DirtySnapshot, SeenEvent
from tracking.errors import BackendError, StoreError, TrackingError, TrackingValueError
from tracking.model import TrackerState
from tracking.spec import definition_from_spec
from tracking.store.base import DataStore, TrackerRecord

logger = logging.getLogger(__name__)

#: The field of a store record's ``extra`` that holds its group's dedupe records.
DEDUPE_FIELD = "dedupe"


def records_to_cache(records: list[TrackerRecord]) -> list[CachedTracker]:
    """Store records -> cache entries (validated: a bad record is an error, not a crash)."""
    result = []
    for record in records:
        try:
            definition = definition_from_spec(record.spec)
            state = TrackerState.from_json(record.state, definition)
        except (TrackingError, TypeError, ValueError) as exc:
            # A corrupt or tampered record: name it. A StoreError, so the
            # event waits (retried) until the record is repaired.
            raise StoreError(
                f"corrupt store record of tracker {record.name!r} of group "
                f"{record.group_id!r}: {exc}"
            ) from None
        result.append(CachedTracker(definition, state, record.expire_at))
    return result


def cache_to_record(group_id: str, tracker: CachedTracker, seq: int) -> TrackerRecord:
    """A cache entry -> the store record of it at sequence ``seq``."""
    return TrackerRecord(
        group_id=group_id,
        name=tracker.definition.name,
        spec=tracker.definition.to_spec(),
        state=tracker.state.to_json(),
        expire_at=tracker.expire_at,
        seq=seq,
    )


def records_to_seen(records: list[TrackerRecord]) -> list[SeenEvent]:
    """The dedupe records persisted with a group (see :func:`snapshot_records`)."""
    seen: list[SeenEvent] = []
    for record in records:
        raw = record.extra.get(DEDUPE_FIELD)
        if raw is None:
            continue
        if not isinstance(raw, list):
            raise TrackingValueError(
                f"malformed dedupe records in {record.group_id!r}/{record.name!r}"
            )
        seen.extend(SeenEvent.from_json(item) for item in raw)
    return seen


def load_group(
    cache: DataCache, store: DataStore, group_id: str
) -> tuple[int, list[CachedTracker]] | None:
    """Install a group from the store into the cache if absent (a cold load).

    Returns the installed version and what was installed, or None if
    another worker installed it first. One store read and one cache round
    trip: expiry is filtered by this machine's clock, which is fine for a
    filter the cache enforces again by its own clock. The group's persisted
    dedupe records are installed with it, so an event applied before the
    cache lost the group is still a duplicate.
    """
    records = store.load_group(group_id, now=time.time())
    entries = records_to_cache(records)
    version = cache.install_group(group_id, entries, records_to_seen(records))
    return (version, entries) if version else None


def snapshot_records(snapshot: DirtySnapshot) -> list[TrackerRecord]:
    """A snapshot's store records; the first one also carries the group's dedupe records.

    One record per group holds them (the others get none), so they cost
    store space once per group; a load reads them from whichever record
    has them. A group without trackers persists none: its events change
    nothing, so counting one twice cannot happen.
    """
    records = [
        cache_to_record(snapshot.group_id, tracker, snapshot.mark)
        for tracker in snapshot.trackers.values()
    ]
    if records and snapshot.seen:
        carried = {DEDUPE_FIELD: [item.to_json() for item in snapshot.seen]}
        records[0] = dataclasses.replace(records[0], extra=carried)
    return records


def _write(store: DataStore, snapshots: list[DirtySnapshot]) -> None:
    """One bulk store write of the snapshots: their removals, then their records."""
    for snapshot in snapshots:
        gone = [name for name in snapshot.removed if name not in snapshot.trackers]
        if gone:
            store.remove(snapshot.group_id, gone)
    store.save([record for snapshot in snapshots for record in snapshot_records(snapshot)])


def flush_group(cache: DataCache, store: DataStore, group_id: str) -> bool:
    """Write a dirty group to the store; True once the store holds its latest state.

    Raises the store's error when the write fails (the dirty mark stays).
    """
    snapshot = cache.dirty_snapshot(group_id)
    if snapshot is None:
        return True
    _write(store, [snapshot])
    return cache.clear_dirty(group_id, snapshot.mark)


@dataclass
class FlushReport:
    """What one write-behind pass did."""

    flushed: list[str] = field(default_factory=list)
    changed_meanwhile: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def flush_dirty(
    cache: DataCache, store: DataStore, limit: int = 1000, batch: int = 100
) -> FlushReport:
    """Flush up to ``limit`` dirty groups, ``batch`` groups per store write.

    Each batch is one bulk ``save`` (one fsync for the file store, one
    ``bulk_write`` for Mongo) plus the removals it carries; a group's dirty
    mark is cleared only after the store acknowledged the batch. When a
    batch fails, its groups are retried one by one so that one bad group
    cannot hold the others back; failures are logged and reported, and
    their marks stay for the next pass.
    """
    report = FlushReport()
    dirty = cache.dirty_groups(limit)
    for start in range(0, len(dirty), batch):
        snapshots = _snapshots(cache, dirty[start : start + batch], report)
        try:
            _write(store, snapshots)
        except (BackendError, TrackingError) as exc:
            logger.warning(
                "bulk flush of %d groups failed (%s); retrying each", len(snapshots), exc
            )
            _flush_one_by_one(cache, store, [s.group_id for s in snapshots], report)
            continue
        for snapshot in snapshots:
            if cache.clear_dirty(snapshot.group_id, snapshot.mark):
                report.flushed.append(snapshot.group_id)
            else:
                report.changed_meanwhile.append(snapshot.group_id)
    return report


def _snapshots(cache: DataCache, group_ids: list[str], report: FlushReport) -> list[DirtySnapshot]:
    """Each group's dirty snapshot; a group whose read fails (a cache that waits for
    replicas, say, on a shard without one) is reported and left dirty, not the batch."""
    found = []
    for group_id in group_ids:
        try:
            snapshot = cache.dirty_snapshot(group_id)
        except BackendError as exc:
            logger.error("snapshot of group %r failed, will retry: %s", group_id, exc)
            report.failed[group_id] = str(exc)
            continue
        if snapshot is not None:
            found.append(snapshot)
    return found


def _flush_one_by_one(
    cache: DataCache, store: DataStore, group_ids: list[str], report: FlushReport
) -> None:
    for group_id in group_ids:
        try:
            if flush_group(cache, store, group_id):
                report.flushed.append(group_id)
            else:
                report.changed_meanwhile.append(group_id)
        except (BackendError, TrackingError) as exc:
            logger.error("flush of group %r failed, will retry: %s", group_id, exc)
            report.failed[group_id] = str(exc)
