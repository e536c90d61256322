-- clear_dirty.lua: clear a group's dirty mark if nothing changed since `mark`.
--
-- KEYS[1..6]: the group's keys (one hash tag, one cluster slot), see lib.lua.
-- ARGV[1] the mark the flusher's snapshot was taken at
--
-- Returns 1 and drops the tombstones when the mark still matches (the store
-- now holds this state), else 0 and changes nothing.

if redis.call('HGET', KEYS[2], F_DIRTY) ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[2], F_DIRTY)
redis.call('DEL', KEYS[6])
return 1
