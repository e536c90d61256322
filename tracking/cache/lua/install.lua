-- install.lua: install a group loaded from the store, only if it is absent.
--
-- KEYS[1..6]: the group's keys (one hash tag, one cluster slot), see lib.lua.
-- ARGV[1] TTL grace in seconds (see retime in lib.lua)
-- ARGV[2] k, the number of dedupe records persisted with the group, then
--         k triples: event id, time applied, digest (as apply.lua writes it)
-- ARGV[3+3k..] quints: tracker name, definition hash, packed state,
--           expire_at ("" = none), rules JSON if periodic ("" = not periodic)
--
-- Returns the installed version (fresh_version in lib.lua, a string; not
-- dirty: the store already holds the group) if installed, 0 if the group was
-- already there (nothing changes). Concurrent cold loads of one group
-- therefore install it exactly once.

redis.replicate_commands()
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local version = fresh_version()
local nseen = tonumber(ARGV[2])
local first = 3 + 3 * nseen
-- The dedupe records, in batches (unpack has a stack limit).
for b = 3, first - 1, 3 * 500 do
  local times, digests = {}, {}
  for i = b, math.min(b + 3 * 500, first) - 1, 3 do
    times[#times + 1] = ARGV[i + 1]
    times[#times + 1] = ARGV[i]
    digests[#digests + 1] = ARGV[i]
    digests[#digests + 1] = ARGV[i + 2]
  end
  redis.call('ZADD', KEYS[3], unpack(times))
  redis.call('HSET', KEYS[4], unpack(digests))
end
local n = 0
local meta = { F_VERSION, version, F_DCOUNT, tostring(nseen) }
local states = {}
local periodic = {}
for i = first, #ARGV, 5 do
  n = n + 1
  local value = ARGV[i + 1] .. ',' .. n
  if ARGV[i + 3] ~= '' then value = value .. ',' .. ARGV[i + 3] end
  meta[#meta + 1] = ARGV[i]
  meta[#meta + 1] = value
  states[#states + 1] = ARGV[i]
  states[#states + 1] = ARGV[i + 2]
  if ARGV[i + 4] ~= '' then periodic[#periodic + 1] = { n, ARGV[i], ARGV[i + 4] } end
end
meta[#meta + 1] = F_ORD
meta[#meta + 1] = tostring(n)
redis.call('HSET', KEYS[2], unpack(meta))
if #states > 0 then redis.call('HSET', KEYS[1], unpack(states)) end
if #periodic > 0 then periodic_save(periodic) end
retime(tonumber(ARGV[1]))
return version
