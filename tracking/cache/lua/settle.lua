-- settle.lua: a sweeper's re-check after it removed the group's work index entry.
--
-- KEYS[1..6]: the group's keys (one hash tag, one cluster slot), see lib.lua.
-- (no ARGV)
--
-- Returns 1 when the group still has work (dirty, or outbox entries): the
-- sweeper then writes the entry back. Otherwise forgets the recorded index
-- request (F_WIDX) and returns 0, so the next apply that gives the group
-- work asks the client for the entry again. Atomic with every apply, so
-- either that apply ran first (and this sees its work) or it runs after
-- (and sees no request recorded); see tracking/cache/redis/indexes.py.

if redis.call('HEXISTS', KEYS[2], F_DIRTY) == 1 or redis.call('HLEN', KEYS[5]) > 0 then
  return 1
end
redis.call('HDEL', KEYS[2], F_WIDX)
return 0
