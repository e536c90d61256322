"""The Redis cache's hot path: ``apply`` / ``apply_many`` and what they precompute.

One round trip per event (see :meth:`HotPath.apply`): the script's
arguments come from per-definition rules computed once per definition
object (:meth:`HotPath._compile`) and per-group key lists kept in memory.
The arguments have two forms: :meth:`HotPath._apply_args` (a list, for
redis-py pipelines: ``apply_many`` and the cluster router's retries) and,
for ``apply``, :meth:`HotPath._packed_apply`, the bytes on the wire, where what is
constant per group (keys, the work index command around its score) and per
definition (name, rules) is encoded once. A unit test holds the two to the
same bytes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from tracking.cache.base import ApplyOutcome, ApplyRequest, CachedGroup, PeriodBounds, TrackStep
from tracking.cache.redis.codec import _parse_outcome, _s, bulk, enc_number, rules_of
from tracking.cache.redis.indexes import IndexedGroups
from tracking.errors import CacheError
from tracking.model import TrackerDefinition

_KEYS_CACHE_SIZE = 100_000
_DEFINITIONS_CACHE_SIZE = 100_000
_COMPILED_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class _Compiled:
    """A definition with what the cache derives from it, computed once per object.

    ``periodic_rules`` is ``rules`` for a tracker with a calendar reset
    period and "" otherwise (what install/put record for rollover).
    ``name_bulk`` and ``rules_bulk`` are the name and rules as the hot path
    sends them (RESP bulk strings, see :meth:`HotPath._packed_apply`).
    """

    definition: TrackerDefinition
    content_hash: str
    rules: str
    periodic_rules: str
    name_bulk: bytes
    rules_bulk: bytes


#: See :meth:`HotPath._hot_heads_of`.
_HotHeads = tuple[tuple[str, bool], bytes, bytes, bytes, bytes, int]


class HotPath(IndexedGroups):
    """Applying events: the script call, its arguments and the work index entry."""

    _keys: dict[str, list[str]]
    _definitions: OrderedDict[str, TrackerDefinition]
    _compiled: OrderedDict[int, _Compiled]
    _window_arg: str
    _max_arg: str
    _grace_arg: str
    _hot_heads: dict[str, _HotHeads]

    if TYPE_CHECKING:

        def get_group(self, group_id: str) -> CachedGroup | None: ...

    def _script_keys(self, group_id: str) -> list[str]:
        """The keys every group script gets: the group's six (one hash tag, one slot)."""
        keys = self._keys.get(group_id)
        if keys is None:
            keys = self._group_keys(group_id)
            if len(self._keys) >= _KEYS_CACHE_SIZE:
                self._keys.clear()
            self._keys[group_id] = keys
        return keys

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
            bulk(definition.name),
            bulk(rules),
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

        On one server the index write is unconditional (cheaper than a
        branch; the sweepers drop entries of clean groups) and follows the
        script in the same write. On a cluster the script runs on its node
        alone and the entry is written after its reply, only when the reply
        asks for it (see :mod:`tracking.cache.redis.indexes`).
        """
        try:
            if self._router is None:
                reply = self._hot_script(
                    lambda: self._packed_apply(
                        group_id, version, steps, event_id, source_id, periods
                    )
                )
            else:
                keys = self._script_keys(group_id)
                self._guard_layout()
                with self._errors():
                    reply = self._router.run_packed(
                        keys[0],
                        self._packed_apply(
                            group_id, version, steps, event_id, source_id, periods, index=False
                        ),
                        lambda: self._invocation(
                            "apply",
                            keys,
                            self._apply_args(
                                group_id, version, steps, event_id, source_id, periods
                            ),
                        ),
                        self._recoverable,
                    )
                if _wants_index(reply):
                    self._execute([self._work_command(group_id)])
        except CacheError:
            self._name_corrupt_record(group_id)
            raise
        return _parse_outcome(reply)

    def _name_corrupt_record(self, group_id: str) -> None:
        """After a failed script: raise a ``CacheError`` naming a corrupt record of the group.

        A script stops with a bare Lua error on a record it cannot parse (a
        tampered or hand-edited state); reading the group through the codec
        names it. Only on the error path; does nothing when the group reads
        cleanly (the failure was something else, raised as it was).
        """
        with contextlib.suppress(RedisError):
            self.get_group(group_id)  # raises CacheError naming the record

    def apply_many(self, requests: Sequence[ApplyRequest]) -> list[ApplyOutcome]:
        """Every request's script and work index write in one pipeline (one round trip).

        Outcomes as :meth:`apply` gives them, in order. A request whose
        script the server lacks (NOSCRIPT, a restart) is rerun alone after
        loading the scripts: the failed call did nothing, and the others
        must not run twice (they would then count as duplicates).
        On a cluster: the scripts in one round trip to their nodes, then
        the work index entries the replies ask for.
        """
        if self._router is not None:
            return self._apply_many_routed(requests)
        self._guard_layout()
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
                pipe = self._server().pipeline(transaction=False)
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

    def _apply_many_routed(self, requests: Sequence[ApplyRequest]) -> list[ApplyOutcome]:
        scripts = [
            (
                "script",
                "apply",
                self._script_keys(r.group_id),
                self._apply_args(r.group_id, r.version, r.steps, r.event_id, None, r.periods),
            )
            for r in requests
        ]
        replies = self._routed(scripts)
        work = [
            self._work_command(r.group_id)
            for r, reply in zip(requests, replies, strict=True)
            if _wants_index(reply)
        ]
        if work:
            self._execute(work)
        return [_parse_outcome(reply) for reply in replies]

    def _packed_apply(
        self,
        group_id: str,
        version: int,
        steps: Sequence[TrackStep],
        event_id: str,
        source_id: str | None,
        periods: PeriodBounds | None,
        *,
        index: bool = True,
    ) -> bytes:
        """The apply script and its work index write, encoded for the wire.

        The same two commands as :meth:`_apply_args` and ``_work_command``
        give, as redis-py would pack them, but with what is constant per
        group and per definition encoded once: generic packing cost about
        15 µs per event at 10 trackers. Without ``index``, the script
        command alone (a cluster writes the entry after the reply).
        """
        heads = self._hot_heads.get(group_id)
        if heads is None or heads[0] != (self._library, self._functions):
            heads = self._hot_heads_of(group_id)
        _, call_head, group_part, work_head, work_tail, head_count = heads
        compile_ = self._compile
        chunks = [
            b"*%d\r\n" % (head_count + 3 * len(steps)),
            call_head,
            bulk(event_id),
            bulk(str(version)),
            bulk(source_id or event_id),
            group_part,
            bulk(
                json.dumps({name: [int(b[0]), int(b[1])] for name, b in periods.items()})
                if periods
                else ""
            ),
        ]
        for item in steps:
            compiled = compile_(item.definition)
            delta = item.delta
            chunks += (
                compiled.name_bulk,
                _ONE if delta == 1 and type(delta) is int else bulk(_delta_arg(delta)),
                compiled.rules_bulk,
            )
        if index:
            chunks += (work_head, bulk(repr(time.time())), work_tail)
        return b"".join(chunks)

    def _hot_heads_of(self, group_id: str) -> _HotHeads:
        """The encoded parts of a group's hot commands that never change (see above),
        and how many arguments the script command has besides the steps'. Valid
        for one library and command (FCALL or EVALSHA), which the first item names."""
        head = self._invocation("apply", self._script_keys(group_id), [])
        work = self._work_command(group_id)
        heads = (
            (self._library, self._functions),
            b"".join(bulk(str(item)) for item in head),
            bulk(group_id) + bulk(self._window_arg) + bulk(self._max_arg) + bulk(self._grace_arg),
            b"*5\r\n" + bulk(work[0]) + bulk(work[1]) + bulk(work[2]),
            bulk(work[4]),
            len(head) + 8,
        )
        if len(self._hot_heads) >= _KEYS_CACHE_SIZE:
            self._hot_heads.clear()
        self._hot_heads[group_id] = heads
        return heads

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
                _delta_arg(delta),
                compile_(item.definition).rules,
            )
        return args


_ONE = bulk("1")


def _delta_arg(delta: Any) -> str:
    """A step's delta as the apply script reads it (see ``codec.enc_number``)."""
    return str(delta) if type(delta) is int else enc_number(delta)


def _wants_index(reply: Any) -> bool:
    """Whether an apply reply asks for the group's work index entry (see ``lua/apply.lua``)."""
    return len(reply) > 8 and _s(reply[8]) == "1"
