"""Read-only views of the Redis cache for people (the dashboard), not for the hot path.

:class:`InspectedCache` is mixed into :class:`~tracking.cache.redis.RedisDataCache`. Each method
costs a bounded number of round trips whatever the number of groups, except
:meth:`InspectedCache.count_groups`, which SCANs and is meant for a
background refresh, never a page load.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracking.cache.base import CachedGroup, OutboxEntry
from tracking.cache.redis.codec import F_DIRTY, _decode_hash, _pairs, _s, dec_number

#: Oldest work-index entries whose dirty flag and outbox are checked by default.
DEFAULT_SAMPLE = 200
#: Groups with work listed by :meth:`InspectedCache.index_summary`.
SHOWN = 10


@dataclass(frozen=True)
class GroupInspection:
    """A group as the cache holds it now, with its pending outbox (firing order)."""

    group: CachedGroup | None
    outbox: list[OutboxEntry] = field(default_factory=list)


@dataclass(frozen=True)
class IndexSummary:
    """What the cross-group indexes say, read without a key scan.

    ``work_groups`` counts work-index entries (groups that may be dirty or
    hold outbox entries; entries of groups that became clean are pruned by
    the next sweep). The ``sampled`` oldest of them were checked:
    ``dirty_groups``, ``outbox_groups`` and ``outbox_entries`` are exact
    when ``sampled == work_groups`` and lower bounds otherwise.
    ``oldest_dirty`` is when the oldest checked dirty group was first
    touched since its last flush (its flush lag is ``now - oldest_dirty``).
    """

    work_groups: int
    expiring_groups: int
    periodic_groups: int
    next_expiry: float | None
    sampled: int
    dirty_groups: int
    outbox_groups: int
    outbox_entries: int
    oldest_dirty: float | None
    #: up to ``SHOWN`` of the oldest checked groups with work: (group id, first touch,
    #: dirty, outbox entries)
    oldest_groups: list[tuple[str, float, bool, int]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.sampled >= self.work_groups


class InspectedCache:
    """Mixin: needs the cache's key helpers, ``_execute``, ``_scan`` and ``_build_group``."""

    key_prefix: str
    index_shards: int

    if TYPE_CHECKING:  # provided by the cache class this is mixed into

        def _group_keys(self, group_id: str) -> list[str]: ...
        def _work_key(self, shard: int) -> str: ...
        def _expiry_key(self, shard: int) -> str: ...
        def _periodic_key(self, shard: int) -> str: ...
        def _build_group(
            self, meta: dict[str, str], states: dict[str, str], state_key: str = ""
        ) -> CachedGroup: ...
        def _scan(self, pattern: str) -> Iterator[list[Any]]: ...
        def _execute(
            self, commands: Sequence[tuple[Any, ...]], *, transaction: bool = False
        ) -> list[Any]: ...

    def inspect_group(self, group_id: str) -> GroupInspection:
        """The group and its pending outbox in one atomic read (MULTI of three HGETALLs)."""
        keys = self._group_keys(group_id)
        raw_meta, raw_state, raw_outbox = self._execute(
            [("HGETALL", keys[1]), ("HGETALL", keys[0]), ("HGETALL", keys[4])], transaction=True
        )
        meta = _decode_hash(raw_meta)
        group = self._build_group(meta, _decode_hash(raw_state)) if meta else None
        rows = []
        for event_id, value in _decode_hash(raw_outbox).items():
            seq, code, stage, progress, limiter, ts_text, name = value.split("\t", 6)
            payload: dict[str, object] = {
                "event_id": event_id,
                "group_id": group_id,
                "code": int(code),
                "name": name,
                "stage": int(stage),
                "progress": dec_number(progress),
                "limiter": int(limiter) if limiter else None,
                "event_ts": float(ts_text),
            }
            rows.append((int(seq), OutboxEntry(group_id, event_id, payload)))
        rows.sort(key=lambda row: row[0])
        return GroupInspection(group, [entry for _, entry in rows])

    def index_summary(self, sample: int = DEFAULT_SAMPLE) -> IndexSummary:
        """Index sizes and the state of the ``sample`` oldest work entries: two round trips."""
        shards = range(self.index_shards)
        commands: list[tuple[Any, ...]] = []
        for n in shards:
            commands += [
                ("ZCARD", self._work_key(n)),
                ("ZCARD", self._expiry_key(n)),
                ("ZCARD", self._periodic_key(n)),
                ("ZRANGE", self._work_key(n), 0, max(sample - 1, 0), "WITHSCORES"),
                ("ZRANGE", self._expiry_key(n), 0, 0, "WITHSCORES"),
            ]
        replies = self._execute(commands)
        work = expiring = periodic = 0
        oldest: list[tuple[float, str]] = []
        expiries: list[float] = []
        for i in shards:
            w, e, p, members, first = replies[5 * i : 5 * i + 5]
            work, expiring, periodic = work + int(w), expiring + int(e), periodic + int(p)
            oldest += [(float(score), _s(member)) for member, score in _pairs(members)]
            expiries += [float(score) for _, score in _pairs(first)]
        oldest.sort()
        checked = oldest[:sample] if sample > 0 else []
        dirty = outbox_groups = outbox_entries = 0
        oldest_dirty: float | None = None
        shown: list[tuple[str, float, bool, int]] = []
        if checked:
            views: list[tuple[Any, ...]] = []
            for _, group_id in checked:
                keys = self._group_keys(group_id)
                views += [("HEXISTS", keys[1], F_DIRTY), ("HLEN", keys[4])]
            flags = self._execute(views)
            for i, (score, group_id) in enumerate(checked):
                is_dirty = bool(flags[2 * i])
                pending = int(flags[2 * i + 1])
                if is_dirty:
                    dirty += 1
                    oldest_dirty = score if oldest_dirty is None else min(oldest_dirty, score)
                if pending:
                    outbox_groups += 1
                    outbox_entries += pending
                if (is_dirty or pending) and len(shown) < SHOWN:
                    shown.append((group_id, score, is_dirty, pending))
        return IndexSummary(
            work_groups=work,
            expiring_groups=expiring,
            periodic_groups=periodic,
            next_expiry=min(expiries) if expiries else None,
            sampled=len(checked),
            dirty_groups=dirty,
            outbox_groups=outbox_groups,
            outbox_entries=outbox_entries,
            oldest_dirty=oldest_dirty,
            oldest_groups=shown,
        )

    def count_groups(self) -> int:
        """Groups in the cache, by SCAN of their meta keys: a full scan, for background use."""
        return sum(len(batch) for batch in self._scan("{" + self.key_prefix + ":*}:m"))


__all__ = ["DEFAULT_SAMPLE", "GroupInspection", "IndexSummary", "InspectedCache"]
