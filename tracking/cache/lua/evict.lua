-- evict.lua: drop a group from the cache unless something of it is unflushed.
--
-- KEYS[1..6]: the group's keys (one hash tag, one cluster slot), see lib.lua.
-- (no ARGV)
--
-- Returns 0 and changes nothing while the group is dirty (the store lacks
-- its latest state) or its outbox holds entries (events not yet handed to
-- the broker). Otherwise deletes every key of the group, dedupe records
-- included, and returns 1 (also when the group was not cached: there is
-- nothing to lose). Its index entries go stale and the sweepers prune them.

if redis.call('HEXISTS', KEYS[2], F_DIRTY) == 1 then return 0 end
if redis.call('HLEN', KEYS[5]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return 1
