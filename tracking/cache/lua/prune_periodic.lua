-- prune_periodic.lua: drop a group's periodic index entry if it has no periodic tracker.
--
-- KEYS[1..9]: the group keys and its index entries, see lib.lua.
-- ARGV[1] group id
--
-- The scripts keep the entry in step with the group's periodic list, so
-- only a group whose keys expired as a whole (the group TTL) leaves one
-- behind. Checked and removed in one step, so an entry a concurrent put
-- just made valid is never dropped. Returns 1 if the entry was dropped.

if redis.call('HEXISTS', KEYS[2], F_PERIODIC) == 1 then return 0 end
return redis.call('ZREM', KEYS[9], ARGV[1])
