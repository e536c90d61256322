"""The Redis cache's cross-group indexes and their sweepers, correct on a cluster too.

``P:w:<n>`` / ``P:e:<n>`` / ``P:p:<n>`` (``index_shards`` of each) are
sorted sets of group ids: ``w`` groups that may be dirty or have pending
outbox entries (score: first touch), ``e`` groups with expiring trackers
(score: earliest expire_at), ``p`` groups holding a periodic tracker
(score 0, ordered by name for paging). A shard is chosen by CRC-32 of the
group id. They live outside the group's slot (on a cluster: on other
nodes, in general), so no script touches them: the client writes them.
All index writes are idempotent additions (``ZADD NX`` / ``LT``); entries
that go stale (remove, expire, evict, a group TTL) are pruned by the
sweepers. A lost index write delays work, never loses it: beat runs
:meth:`IndexedGroups.repair_indexes` (every primary's keys) periodically.

**The one ordering rule.** "B after A" below means B is sent after A has
*run*: on one server, later in the same pipeline (a server runs one
connection's commands in order, and runs them all even if the client dies
after sending); on a cluster, after A's reply (a cluster pipeline has no
order between nodes). :meth:`ScriptRunner._execute_phases` does exactly
that. Scripts are atomic, so each group script is one point in time.

**Claim: a group with work (dirty, or outbox entries) is in the work
index, or an apply that gave it work has still to write its entry, or a
process died between a script and its index write (then the entry comes
back with the group's next apply after ``WIDX_REFRESH`` or the next
repair).** Writers: every admin script that can give a group work (put,
remove, reset, expire) is followed by ``ZADD NX`` of the entry, always.
``apply`` records in the meta hash (``F_WIDX``, atomically with the
change) that it asked for the entry, and asks (reply field) only when no
request is recorded or the last one is older than ``WIDX_REFRESH``; the
client then writes the entry after the script (one server: always, in the
same write; cluster: after the reply, so a hot group costs one round trip
and only a group that just got work costs a second one). The sweeper that
drops the entry of a group that looked clean does, in order: (1) ``ZREM``
the entry; (2) after it, the ``settle`` script on the group, which
atomically either finds work (then (3) the sweeper writes the entry back)
or deletes ``F_WIDX``. Take any write W that gives the group work (an
admin script, or an apply) and the settle script S of a concurrent sweep:

- W runs before S: S sees the work and the entry is written back in (3),
  after the ``ZREM`` of (1).
- W runs after S: S ran after (1), so W's own index write, which follows
  W, lands after the ``ZREM``. For an admin script that write always
  happens. For an apply it happens when the apply asked; it asked unless
  a request was recorded after S deleted it, i.e. by an earlier apply A
  after S, whose entry write likewise follows the ``ZREM``.

The expiry and periodic indexes follow the same rule with their own
re-checks: install/put write ``e`` / ``p`` entries after the script, and
:meth:`IndexedGroups._drop_expiry_entries` / ``_drop_periodic_entries``
``ZREM``, then re-read the group's meta hash, then re-add: a put running
before the re-read is seen by it; one running after writes its entry
after the ``ZREM``. Definitions (``P:def:<hash>``) are written before the
script that refers to them, so a reader never finds a hash without its
definition.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tracking.cache.base import CachedTracker, OutboxEntry, outbox_payload
from tracking.cache.redis.codec import (
    F_DIRTY,
    F_PERIODIC,
    _decode_hash,
    _pairs,
    _parse_meta,
    _s,
    dec_number,
    enc_number,
)
from tracking.cache.redis.scripts import ScriptRunner
from tracking.engine import Fired

_GROUP_SUFFIXES = (":s", ":m", ":d", ":o", ":x", ":r")
_SWEEP_CHUNK = 500
_SCAN_COUNT = 1000


@dataclass(frozen=True)
class _GroupView:
    """What the sweepers need to know about a group in the work index."""

    group_id: str
    dirty: bool
    outbox: dict[str, str]


class IndexedGroups(ScriptRunner):
    """Group keys, the cross-group indexes and the sweepers that walk them."""

    key_prefix: str
    index_shards: int

    def _group_keys(self, group_id: str) -> list[str]:
        tag = "{" + self.key_prefix + ":" + group_id + "}"
        return [tag + suffix for suffix in _GROUP_SUFFIXES]

    def _shard(self, group_id: str) -> int:
        return zlib.crc32(group_id.encode()) % self.index_shards

    def _work_key(self, shard: int) -> str:
        return f"{self.key_prefix}:w:{shard}"

    def _expiry_key(self, shard: int) -> str:
        return f"{self.key_prefix}:e:{shard}"

    def _periodic_key(self, shard: int) -> str:
        return f"{self.key_prefix}:p:{shard}"

    def _work_command(self, group_id: str) -> tuple[Any, ...]:
        return ("ZADD", self._work_key(self._shard(group_id)), "NX", repr(time.time()), group_id)

    def _periodic_command(self, group_id: str) -> tuple[Any, ...]:
        return ("ZADD", self._periodic_key(self._shard(group_id)), 0, group_id)

    def _tracker_index_commands(
        self, group_id: str, trackers: Sequence[CachedTracker]
    ) -> list[tuple[Any, ...]]:
        """Index writes that follow install/put: expiry (earliest expire_at) and periodic."""
        commands: list[tuple[Any, ...]] = []
        expiries = [t.expire_at for t in trackers if t.expire_at is not None]
        if expiries:
            key = self._expiry_key(self._shard(group_id))
            commands.append(("ZADD", key, "LT", enc_number(min(expiries)), group_id))
        if any(t.definition.period is not None for t in trackers):
            commands.append(self._periodic_command(group_id))
        return commands

    # -- periodic groups -----------------------------------------------------

    def periodic_groups(self, limit: int = 1000, after: str = "") -> list[str]:
        """Merge the shards of the periodic index (ordered by name) after ``after``.

        Entries of groups that no longer hold a periodic tracker (left by
        remove, expire, evict or the group TTL) are pruned on the way, and
        the page is refilled.
        """
        found: list[str] = []
        cursor = after
        while len(found) < limit:
            want = limit - len(found)
            low = "(" + cursor if cursor else "-"
            pages = self._execute(
                [
                    ("ZRANGE", self._periodic_key(n), low, "+", "BYLEX", "LIMIT", 0, want)
                    for n in range(self.index_shards)
                ]
            )
            candidates = sorted(_s(m) for page in pages for m in page)[:want]
            if not candidates:
                break
            present = self._execute(
                [("HEXISTS", self._group_keys(g)[1], F_PERIODIC) for g in candidates]
            )
            stale = [g for g, ok in zip(candidates, present, strict=True) if not ok]
            found += [g for g, ok in zip(candidates, present, strict=True) if ok]
            if stale:
                self._drop_periodic_entries(stale)
            cursor = candidates[-1]
        return found[:limit]

    def _drop_periodic_entries(self, group_ids: Sequence[str]) -> None:
        """Remove periodic index entries, then re-add any group that became periodic meanwhile.

        The recheck follows the removal (see the module docstring): a put's
        index write follows its script, so either the recheck sees the put
        or its write lands after our removal.
        """
        removals = [("ZREM", self._periodic_key(self._shard(g)), g) for g in group_ids]
        rechecks = [("HEXISTS", self._group_keys(g)[1], F_PERIODIC) for g in group_ids]
        present = self._execute_phases(removals, rechecks)[len(group_ids) :]
        readd = [self._periodic_command(g) for g, ok in zip(group_ids, present, strict=True) if ok]
        if readd:
            self._execute(readd)

    def _drop_expiry_entries(self, group_ids: Sequence[str]) -> None:
        """Remove expiry index entries, then re-add any group that gained an expiry meanwhile."""
        self._execute([("ZREM", self._expiry_key(self._shard(g)), g) for g in group_ids])
        metas = self._execute([("HGETALL", self._group_keys(g)[1]) for g in group_ids])
        readd: list[tuple[Any, ...]] = []
        for group_id, raw in zip(group_ids, metas, strict=True):
            _, entries = _parse_meta(_decode_hash(raw))
            expiries = [e.expire_at for e in entries if e.expire_at is not None]
            if expiries:
                key = self._expiry_key(self._shard(group_id))
                readd.append(("ZADD", key, "LT", enc_number(min(expiries)), group_id))
        if readd:
            self._execute(readd)

    # -- write-behind --------------------------------------------------------

    def _work_groups(self) -> list[str]:
        """Every group in the work index, first-touched first."""
        lists = self._execute(
            [("ZRANGE", self._work_key(n), 0, -1, "WITHSCORES") for n in range(self.index_shards)]
        )
        members = sorted(
            (float(score), _s(member)) for items in lists for member, score in _pairs(items)
        )
        return [group_id for _, group_id in members]

    def _views(self, group_ids: Sequence[str]) -> list[_GroupView]:
        """Dirty flag and outbox of each group (one round trip)."""
        commands: list[tuple[Any, ...]] = []
        for group_id in group_ids:
            keys = self._group_keys(group_id)
            commands += [("HEXISTS", keys[1], F_DIRTY), ("HGETALL", keys[4])]
        results = self._execute(commands)
        return [
            _GroupView(group_id, bool(results[2 * i]), _decode_hash(results[2 * i + 1]))
            for i, group_id in enumerate(group_ids)
        ]

    def _drop_work_entries(self, group_ids: Sequence[str]) -> None:
        """Remove work index entries of clean groups, then re-add any that got work meanwhile.

        ``ZREM``, then the ``settle`` script per group, then the entries of the
        groups that have work again (the proof is in the module docstring).
        """
        if not group_ids:
            return
        removals = [("ZREM", self._work_key(self._shard(g)), g) for g in group_ids]
        settles: list[tuple[Any, ...]] = [
            ("script", "settle", self._group_keys(g), []) for g in group_ids
        ]
        busy = self._execute_phases(removals, settles)[len(group_ids) :]
        readd = [self._work_command(g) for g, b in zip(group_ids, busy, strict=True) if int(b)]
        if readd:
            self._execute(readd)

    def _sweep(self, want: int, count: Any) -> list[_GroupView]:
        """Walk the work index in chunks until ``count(views)`` reaches ``want``."""
        kept: list[_GroupView] = []
        groups = self._work_groups()
        for start in range(0, len(groups), _SWEEP_CHUNK):
            views = self._views(groups[start : start + _SWEEP_CHUNK])
            self._drop_work_entries([v.group_id for v in views if not v.dirty and not v.outbox])
            kept += [v for v in views if v.dirty or v.outbox]
            if count(kept) >= want:
                break
        return kept

    def dirty_groups(self, limit: int = 1000) -> list[str]:
        views = self._sweep(limit, lambda kept: sum(1 for v in kept if v.dirty))
        return [v.group_id for v in views if v.dirty][:limit]

    def outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """Pending events: groups first-touched first, each group's in firing order."""
        entries: list[OutboxEntry] = []
        views = self._sweep(limit, lambda kept: sum(len(v.outbox) for v in kept))
        for view in views:
            rows = []
            for event_id, value in view.outbox.items():
                seq, code, stage, progress, limiter, ts_text, name = value.split("\t", 6)
                fired = Fired(
                    int(code),
                    name,
                    int(stage),
                    dec_number(progress),
                    int(limiter) if limiter else None,
                )
                rows.append((int(seq), event_id, fired, float(ts_text)))
            rows.sort(key=lambda row: row[0])
            for _, event_id, fired, ts in rows:
                payload = outbox_payload(view.group_id, fired, event_id, ts)
                entries.append(OutboxEntry(view.group_id, event_id, payload))
            if len(entries) >= limit:
                break
        return entries[:limit]

    # -- maintenance -----------------------------------------------------------

    def _scan(self, pattern: str) -> Iterator[list[Any]]:
        with self._errors():
            batch: list[Any] = []
            for key in self._client.scan_iter(match=pattern, count=_SCAN_COUNT):
                batch.append(key)
                if len(batch) >= _SCAN_COUNT:
                    yield batch
                    batch = []
            if batch:
                yield batch

    def repair_indexes(self) -> int:
        """Re-add every dirty, outbox-holding, expiring or periodic group to its index entries.

        A backstop for lost index writes (they follow their script in a
        pipeline, so a connection lost in between, a manual or partial key
        deletion): covers the work, expiry and periodic indexes. SCANs the
        meta keys; returns how many groups it saw.
        """
        seen = 0
        suffix = "}:m"
        for batch in self._scan("{" + self.key_prefix + ":*" + suffix):
            group_ids = [_s(key)[len(self.key_prefix) + 2 : -len(suffix)] for key in batch]
            seen += len(group_ids)
            metas = self._execute([("HGETALL", self._group_keys(g)[1]) for g in group_ids])
            views = self._views(group_ids)
            commands: list[tuple[Any, ...]] = []
            for group_id, raw, view in zip(group_ids, metas, views, strict=True):
                if view.dirty or view.outbox:
                    commands.append(self._work_command(group_id))
                meta = _decode_hash(raw)
                _, entries = _parse_meta(meta)
                expiries = [e.expire_at for e in entries if e.expire_at is not None]
                if expiries:
                    key = self._expiry_key(self._shard(group_id))
                    commands.append(("ZADD", key, "LT", enc_number(min(expiries)), group_id))
                if F_PERIODIC in meta:
                    commands.append(
                        ("ZADD", self._periodic_key(self._shard(group_id)), 0, group_id)
                    )
            if commands:
                self._execute(commands)
        return seen
