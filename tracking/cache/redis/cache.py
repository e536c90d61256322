"""``RedisDataCache``: the :class:`DataCache` operations on top of the scripts and indexes.

The data model and the reasoning behind it are in :mod:`tracking.cache.redis`.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from tracking._validate import canonical_json
from tracking.cache.base import (
    CachedGroup,
    CachedTracker,
    DataCache,
    DirtySnapshot,
    OutboxEntry,
    SeenEvent,
)
from tracking.cache.redis.client import client_from_url
from tracking.cache.redis.codec import (
    F_DIRTY,
    _decode_hash,
    _pairs,
    _parse_meta,
    _s,
    dec_number,
    enc_number,
    pack_state,
    seen_digest,
    seen_records,
    unpack_state,
)
from tracking.cache.redis.hot import HotPath, _Compiled, _HotHeads
from tracking.cache.redis.inspect import InspectedCache
from tracking.engine import Fired
from tracking.errors import CacheError, ConflictingNameError, TrackingValueError
from tracking.events import EVENT_TRACKER_EXPIRED, EVENT_TRACKER_REMOVED, EVENT_TRACKER_RESET
from tracking.model import ResetPolicy, TrackerDefinition, TrackerState
from tracking.spec import definition_from_spec

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_KEYS_CACHE_SIZE = 100_000
_DEFINITIONS_CACHE_SIZE = 100_000
_COMPILED_CACHE_SIZE = 100_000


class RedisDataCache(HotPath, DataCache, InspectedCache):
    """A :class:`DataCache` in Redis, shared by every process that uses the same prefix.

    ``url_or_client``: a redis-py URL (``redis://``, ``rediss://``,
    ``unix://``), a Redis Cluster URL (``redis+cluster://host:port[,...]``,
    ``rediss+cluster://``; see :mod:`tracking.cache.redis.client`), or a
    ``redis.Redis`` / ``redis.cluster.RedisCluster`` client (not closed by
    :meth:`close`).
    ``key_prefix`` separates products or tests sharing one server.
    ``dedupe_window`` (seconds) and ``dedupe_max_entries`` (per group)
    bound the memory spent on remembering event ids. ``index_shards`` is
    the number of sorted sets each cross-group index is split into.
    ``expiry_grace`` is how long after its last tracker's expiry a group's
    keys live on (see the module docstring). ``wait_replicas`` (default 0:
    off) makes :meth:`dirty_snapshot` wait until that many replicas hold the
    state it read, so that what the store receives survives a failover
    (see there); ``wait_timeout`` bounds the wait (seconds).
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis | RedisCluster,
        key_prefix: str = "trk",
        *,
        dedupe_window: float = 86400,
        dedupe_max_entries: int = 10000,
        index_shards: int = 16,
        expiry_grace: float = 86400,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        if not isinstance(key_prefix, str) or not _PREFIX_RE.match(key_prefix):
            raise TrackingValueError(
                f"key_prefix must be 1-64 characters from A-Z a-z 0-9 _ . -, got {key_prefix!r}"
            )
        if dedupe_window < 0:
            raise TrackingValueError("dedupe_window must be >= 0 seconds")
        if dedupe_max_entries < 1:
            raise TrackingValueError("dedupe_max_entries must be >= 1")
        if index_shards < 1:
            raise TrackingValueError("index_shards must be >= 1")
        if expiry_grace < 0:
            raise TrackingValueError("expiry_grace must be >= 0 seconds")
        if wait_replicas < 0 or wait_timeout <= 0:
            raise TrackingValueError("wait_replicas must be >= 0 and wait_timeout > 0 seconds")
        client: redis.Redis | RedisCluster
        if isinstance(url_or_client, str):
            try:  # a cluster client connects at once, to learn the slots
                client = client_from_url(url_or_client)
            except (RedisError, RedisClusterException) as exc:
                raise CacheError(f"Redis cache error: {exc}") from exc
            self._owns_client = True
        elif isinstance(url_or_client, redis.Redis | RedisCluster):
            client = url_or_client
            self._owns_client = False
        else:
            raise TrackingValueError(
                "url_or_client must be a URL, a redis.Redis or a RedisCluster, "
                f"not {type(url_or_client).__name__}"
            )
        self.key_prefix = key_prefix
        self.dedupe_window = float(dedupe_window)
        self.dedupe_max_entries = int(dedupe_max_entries)
        self.index_shards = int(index_shards)
        self.expiry_grace = float(expiry_grace)
        self.wait_replicas = int(wait_replicas)
        self.wait_timeout = float(wait_timeout)
        self._window_arg = enc_number(self.dedupe_window)
        self._max_arg = str(self.dedupe_max_entries)
        self._grace_arg = enc_number(self.expiry_grace)
        self._init_scripts(client)
        self._definitions: OrderedDict[str, TrackerDefinition] = OrderedDict()
        self._compiled: OrderedDict[int, _Compiled] = OrderedDict()
        self._keys: dict[str, list[str]] = {}
        self._hot_heads: dict[str, _HotHeads] = {}

    # -- plumbing ----------------------------------------------------------

    def _def_key(self, content_hash: str) -> str:
        return f"{self.key_prefix}:def:{content_hash}"

    def _resolve(self, hashes: Iterable[str]) -> dict[str, TrackerDefinition]:
        """Definitions by content hash: from memory, the missing ones in one MGET."""
        found: dict[str, TrackerDefinition] = {}
        missing: list[str] = []
        for content_hash in dict.fromkeys(hashes):
            definition = self._definitions.get(content_hash)
            if definition is None:
                missing.append(content_hash)
            else:
                found[content_hash] = definition
        if missing:
            keys = [self._def_key(h) for h in missing]
            if self._router is not None:  # one GET per key: they live in many slots
                raw = self._execute([("GET", key) for key in keys])
            else:
                with self._errors():
                    raw = self._server().mget(keys)
            for content_hash, spec_json in zip(missing, raw, strict=True):
                if spec_json is None:
                    raise CacheError(
                        f"definition {content_hash} is missing from Redis "
                        f"(key {self._def_key(content_hash)!r}); was the cache flushed?"
                    )
                definition = self._load_definition(self._def_key(content_hash), spec_json)
                self._remember_definition(content_hash, definition)
                found[content_hash] = definition
        return found

    def _tracker_args(self, trackers: Sequence[CachedTracker]) -> tuple[list[str], list[Any]]:
        """Script arguments (name, hash, packed state, expire_at, periodic rules), SET NXs."""
        args: list[str] = []
        commands: list[Any] = []
        seen: set[str] = set()
        for tracker in trackers:
            compiled = self._compile(tracker.definition)
            expire = "" if tracker.expire_at is None else enc_number(tracker.expire_at)
            args += [
                tracker.definition.name,
                compiled.content_hash,
                pack_state(tracker.state),
                expire,
                compiled.periodic_rules,
            ]
            if compiled.content_hash not in seen:
                seen.add(compiled.content_hash)
                spec = canonical_json(tracker.definition.to_spec())
                commands.append(("SET", self._def_key(compiled.content_hash), spec, "NX"))
        return args, commands

    def _parse_taken(self, text: str) -> list[tuple[CachedTracker, TrackerState]]:
        """Lines ``name\\tpacked\\tmeta`` of removed/reset trackers -> cached trackers."""
        rows = []
        for line in text.split("\n") if text else []:
            name, packed, meta = line.split("\t", 2)
            parts = meta.split(",")
            expire_at = float(parts[2]) if len(parts) > 2 and parts[2] else None
            rows.append((name, parts[0], unpack_state(packed), expire_at))
        definitions = self._resolve(row[1] for row in rows)
        return [
            (CachedTracker(definitions[h], state, expire_at), state)
            for _, h, state, expire_at in rows
        ]

    # -- clock and reads ---------------------------------------------------

    def now(self) -> float:
        """Redis ``TIME`` in seconds (the one clock of every worker)."""
        with self._errors():
            sec, usec = self._client.time()
        return int(sec) + int(usec) / 1_000_000

    def get_definitions(self, group_id: str) -> tuple[int, list[TrackerDefinition]] | None:
        """Version and definitions: one HGETALL, plus one MGET for unknown definitions."""
        with self._errors():
            meta = _decode_hash(self._client.hgetall(self._group_keys(group_id)[1]))
        if not meta:
            return None
        version, entries = _parse_meta(meta)
        definitions = self._resolve(e.content_hash for e in entries)
        return version, [definitions[e.content_hash] for e in entries]

    def get_group(self, group_id: str) -> CachedGroup | None:
        keys = self._group_keys(group_id)
        raw_meta, raw_state = self._execute(
            [("HGETALL", keys[1]), ("HGETALL", keys[0])], transaction=True
        )
        meta = _decode_hash(raw_meta)
        if not meta:
            return None
        return self._build_group(meta, _checked_states(raw_state, keys[0]), keys[0])

    def _build_group(
        self, meta: dict[str, str], states: dict[str, str], state_key: str = ""
    ) -> CachedGroup:
        version, entries = _parse_meta(meta)
        definitions = self._resolve(e.content_hash for e in entries)
        group = CachedGroup(version=version)
        for entry in entries:
            packed = states.get(entry.name)
            if packed is None:  # never written apart; tolerate a torn manual edit
                continue
            try:
                state = unpack_state(packed)
            except (ValueError, KeyError, IndexError):
                raise _corrupt(state_key, entry.name, packed) from None
            group.trackers[entry.name] = CachedTracker(
                definitions[entry.content_hash], state, entry.expire_at
            )
        return group

    @staticmethod
    def _load_definition(key: str, spec_json: Any) -> TrackerDefinition:
        """A definition read from ``key``: JSON through the spec registry, nothing else.

        Whatever else is there (a pickle, an expression, an unknown type)
        raises a ``CacheError`` naming the key; nothing in it is executed.
        """
        try:
            return definition_from_spec(json.loads(_s(spec_json)))
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            raise CacheError(
                f"corrupt definition record {key!r}: {exc}; "
                "rewrite it from the tracker's spec (update_tracker) or the store"
            ) from None

    # -- cold load -----------------------------------------------------------

    def install_group(
        self, group_id: str, trackers: Sequence[CachedTracker], seen: Sequence[SeenEvent] = ()
    ) -> int:
        """SET NX each definition, then the install-if-absent script, then the expiry and
        periodic index entries (no work entry: the group is clean). One pipeline on one
        server; on a cluster each step after the previous one's replies (a reader must
        never see a definition hash before its definition, see ``indexes``). The script
        also restores the group's persisted dedupe records (``seen``)."""
        args, defs = self._tracker_args(trackers)
        dedupe: list[str] = [str(len(seen))]
        for record in seen:
            dedupe += [record.event_id, repr(float(record.applied_at)), seen_digest(record)]
        script = (
            "script",
            "install",
            self._script_keys(group_id),
            [self._grace_arg, *dedupe, *args],
        )
        results = self._execute_phases(
            defs, [script], self._tracker_index_commands(group_id, trackers)
        )
        return int(results[len(defs)])  # the installed version, 0 if already there

    # -- hot path ------------------------------------------------------------

    # -- eviction and administration ------------------------------------------

    def evict_group(self, group_id: str) -> bool:
        """One script: refuse while dirty or with outbox entries, else drop the group's keys.

        Its index entries are left to the sweepers, which prune entries of
        groups without work, expiry or periodic trackers: removing them
        here could drop the entry a concurrent put has just written.
        """
        evicted = int(self._script("evict", self._script_keys(group_id), [])) == 1
        if evicted:
            self._keys.pop(group_id, None)
        return evicted

    def put_trackers(
        self,
        group_id: str,
        trackers: Sequence[CachedTracker],
        source_id: str,
        replace: bool = False,
    ) -> tuple[int, list[Fired]]:
        args, defs = self._tracker_args(trackers)
        script = (
            "script",
            "put",
            self._script_keys(group_id),
            [source_id, group_id, "1" if replace else "0", self._grace_arg, *args],
        )
        after = [self._work_command(group_id), *self._tracker_index_commands(group_id, trackers)]
        reply = self._execute_phases(defs, [script], after)[len(defs)]
        if _s(reply[0]) == "conflict":
            raise ConflictingNameError(group_id, _s(reply[1]))
        fired = []
        text = _s(reply[2])
        for line in text.split("\n") if text else []:
            code, stage, progress, _, name = line.split("\t", 4)
            fired.append(Fired(int(code), name, int(stage), dec_number(progress)))
        return int(reply[1]), fired

    def remove_trackers(
        self, group_id: str, names: Sequence[str] | None, source_id: str
    ) -> list[tuple[CachedTracker, Fired]]:
        args = [source_id, group_id, "1" if names is None else "0", self._grace_arg]
        args += list(names or [])
        script = ("script", "remove", self._script_keys(group_id), args)
        text = _s(self._execute_phases([script], [self._work_command(group_id)])[0])
        return [
            (cached, Fired(EVENT_TRACKER_REMOVED, cached.definition.name, s.stage, s.progress))
            for cached, s in self._parse_taken(text)
        ]

    def reset_trackers(
        self, group_id: str, names: Sequence[str], policy: ResetPolicy | None, source_id: str
    ) -> list[tuple[CachedTracker, Fired]]:
        """Reset with the rules of the current definitions (retried if they change meanwhile)."""
        keys = self._script_keys(group_id)
        for _ in range(10):
            loaded = self.get_definitions(group_id)
            if loaded is None:
                return []
            version, definitions = loaded
            by_name = {d.name: d for d in definitions}
            args = [source_id, group_id, str(version), "" if policy is None else str(int(policy))]
            for name in names:
                definition = by_name.get(name)
                if definition is not None:
                    args += [name, self._compile(definition).rules]
            script = ("script", "reset", keys, args)
            reply = self._execute_phases([script], [self._work_command(group_id)])[0]
            kind = _s(reply[0])
            if kind == "missing":
                return []
            if kind == "ok":
                return [
                    (
                        cached,
                        Fired(EVENT_TRACKER_RESET, cached.definition.name, s.stage, s.progress),
                    )
                    for cached, s in self._parse_taken(_s(reply[1]))
                ]
        raise CacheError(f"group {group_id!r} kept changing during reset_trackers")

    def expire(
        self, source_id: str, now: float | None = None, limit: int = 1000
    ) -> list[tuple[str, CachedTracker, Fired]]:
        """Sweep the expiry index: due groups run the expire script, entries move on."""
        cutoff = self.now() if now is None else now
        now_arg = "" if now is None else enc_number(now)
        shards = range(self.index_shards)
        due_lists = self._execute(
            [
                ("ZRANGEBYSCORE", self._expiry_key(n), "-inf", repr(cutoff), "WITHSCORES")
                for n in shards
            ]
        )
        due = sorted(
            ((float(score), _s(member)) for items in due_lists for member, score in _pairs(items)),
        )
        found: list[tuple[str, CachedTracker, Fired]] = []
        emptied: list[str] = []
        for _, group_id in due:
            if len(found) >= limit:
                break
            args = [source_id, group_id, now_arg, str(limit - len(found)), self._grace_arg]
            script = ("script", "expire", self._script_keys(group_id), args)
            reply = self._execute_phases([script], [self._work_command(group_id)])[0]
            next_at = _s(reply[1])
            taken = self._parse_taken(_s(reply[2]))
            key = self._expiry_key(self._shard(group_id))
            if next_at:
                self._execute([("ZADD", key, next_at, group_id)])
            else:
                emptied.append(group_id)
            found += [
                (
                    group_id,
                    cached,
                    Fired(EVENT_TRACKER_EXPIRED, cached.definition.name, s.stage, s.progress),
                )
                for cached, s in taken
            ]
        if emptied:
            self._drop_expiry_entries(emptied)
        return found

    # -- write-behind --------------------------------------------------------

    def dirty_snapshot(self, group_id: str) -> DirtySnapshot | None:
        """The group's state for the store, read atomically.

        With ``wait_replicas``, the read also writes a short-lived marker key
        in the group's slot and then waits (``WAIT``, ``wait_timeout``) until
        that many replicas have everything written to the group's primary
        up to this read (replication is one ordered stream); fewer raise
        :class:`CacheError` and the group stays dirty. So a state that
        reaches the store survives the failover of that primary, and a
        later flush of a replica's older state cannot overwrite it.
        """
        keys = self._group_keys(group_id)
        reads: list[tuple[Any, ...]] = [
            ("HGETALL", keys[1]),
            ("HGETALL", keys[0]),
            ("SMEMBERS", keys[5]),
            ("ZRANGE", keys[2], 0, -1, "WITHSCORES"),
            ("HGETALL", keys[3]),
        ]
        if self.wait_replicas:
            marker = ("SET", keys[0][: -len(":s")] + ":f", "1", "PX", 60_000)
            timeout_ms = max(int(self.wait_timeout * 1000), 1)
            results, acked = self._transaction_then_wait(
                [*reads, marker], self.wait_replicas, timeout_ms
            )
            if acked < self.wait_replicas:
                raise CacheError(
                    f"only {acked} of {self.wait_replicas} replicas acknowledged group "
                    f"{group_id!r} within {self.wait_timeout} s; it stays dirty"
                )
            raw_meta, raw_state, raw_removed, raw_times, raw_digests = results[:5]
        else:
            raw_meta, raw_state, raw_removed, raw_times, raw_digests = self._execute(
                reads, transaction=True
            )
        meta = _decode_hash(raw_meta)
        mark = meta.get(F_DIRTY)
        if mark is None:
            return None
        group = self._build_group(meta, _decode_hash(raw_state))
        removed = sorted(_s(name) for name in raw_removed)
        seen = seen_records(raw_times, _decode_hash(raw_digests))
        return DirtySnapshot(group_id, int(mark), group.trackers, removed, seen)

    def clear_dirty(self, group_id: str, mark: int) -> bool:
        return int(self._script("clear_dirty", self._script_keys(group_id), [str(mark)])) == 1

    def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        by_group: dict[str, list[str]] = {}
        for entry in entries:
            by_group.setdefault(entry.group_id, []).append(entry.entry_id)
        if by_group:
            self._execute([("HDEL", self._group_keys(g)[4], *ids) for g, ids in by_group.items()])

    # -- maintenance -----------------------------------------------------------

    def flush(self) -> None:
        """UNLINK every key under this prefix (SCAN in batches); never FLUSHDB."""
        for pattern in ("{" + self.key_prefix + ":*", self.key_prefix + ":*"):
            for batch in self._scan(pattern):
                with self._errors():
                    self._client.unlink(*batch)
        self._definitions.clear()
        self._compiled.clear()
        self._layout_ok = False  # the layout key went too: record it again on the next write

    def close(self) -> None:
        self._close_connections()
        if self._owns_client:
            with self._errors():
                self._client.close()


def _corrupt(state_key: str, name: str, packed: object) -> CacheError:
    return CacheError(
        f"corrupt state record of tracker {name!r} in {state_key!r}: {packed!r:.60}; "
        "reload the group from the store (evict it) or reset the tracker"
    )


def _checked_states(raw_state: Any, state_key: str) -> dict[str, str]:
    """The state hash as text; a record that is not text is named in a ``CacheError``."""
    states = {}
    for field, packed in (raw_state or {}).items():
        try:
            states[_s(field)] = _s(packed)
        except UnicodeDecodeError:
            raise _corrupt(state_key, _s(field), packed) from None
    return states
