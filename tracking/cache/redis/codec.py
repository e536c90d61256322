"""Encoding and decoding for the Redis cache: packed states, numbers, meta hashes, replies.

Pure functions (no Redis calls) shared by the other modules of
:mod:`tracking.cache.redis`; the formats are those of ``lua/lib.lua``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tracking.cache.base import ApplyOutcome, ApplyStatus, SeenEvent
from tracking.engine import Fired
from tracking.model import Number, TrackerDefinition, TrackerState, limiter_kind

#: The version of what the cache keeps in Redis: key names, packed states,
#: meta fields. Bump it with any change that code of the previous version
#: would misread. Each cache records it under ``<prefix>:layout`` before its
#: first write and refuses a prefix that holds another one (see
#: ``ScriptRunner._guard_layout``).
LAYOUT_VERSION = 1

#: Group-level fields of the meta hash (see ``lua/lib.lua``).
F_VERSION = "\x01v"
F_DIRTY = "\x01d"
F_TTL = "\x01e"
F_PERIODIC = "\x01p"


def _s(value: Any) -> str:
    """A reply item as str (works with and without ``decode_responses``)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def bulk(value: str) -> bytes:
    """``value`` as one RESP bulk string (``$<len>``, CRLF, UTF-8 bytes, CRLF), as redis-py sends.

    The hot path encodes its command itself (see ``RedisDataCache.apply``),
    with the parts that are the same on every call (keys, rules) encoded once.
    """
    data = value.encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


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


@dataclass(frozen=True)
class _MetaEntry:
    """One tracker's entry in the meta hash."""

    name: str
    content_hash: str
    ordinal: int
    expire_at: float | None


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


def seen_digest(record: SeenEvent) -> str:
    """A dedupe record's outcome as ``lua/apply.lua`` keeps it: names by "\t", lists by "\n"."""
    return "\n".join(
        "\t".join(names) for names in (record.changed, record.limited, record.completed)
    )


def seen_records(raw_times: Any, digests: dict[str, str]) -> list[SeenEvent]:
    """The dedupe zset (``ZRANGE ... WITHSCORES``, RESP2 flat or RESP3 pairs) and digest hash,
    as records, oldest first. The scripts keep both bounded by the window and the count
    (with some slack: lookups check both exactly, and so does a cold load)."""
    items = list(raw_times or [])
    pairs = (
        [(item[0], item[1]) for item in items]
        if items and isinstance(items[0], list | tuple)
        else list(zip(items[0::2], items[1::2], strict=True))
    )
    seen = []
    for member, score in pairs:
        event_id = _s(member)
        digest = digests.get(event_id)
        if digest is None:
            continue
        lists = [*digest.split("\n"), "", "", ""][:3]
        changed, limited, completed = (tuple(n for n in x.split("\t") if n) for x in lists)
        seen.append(SeenEvent(event_id, float(_s(score)), changed, limited, completed))
    return seen
