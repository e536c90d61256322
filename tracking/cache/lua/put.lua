-- put.lua: add trackers, or with replace add-or-replace them, atomically.
--
-- KEYS[1..6]: the group's keys (one hash tag, one cluster slot), see lib.lua.
-- ARGV[1] source id (outbox event ids)
-- ARGV[2] group id (part of the outbox event ids)
-- ARGV[3] "1" to replace existing trackers, "0" to refuse a clash
-- ARGV[4] TTL grace in seconds (see retime in lib.lua)
-- ARGV[5..] quints: tracker name, definition hash, packed state,
--           expire_at ("" = none), rules JSON if periodic ("" = not periodic)
--
-- Without replace, an existing name returns {"conflict", name} and nothing
-- changes. Otherwise a missing group is created (fresh_version in lib.lua), trackers are
-- written (a replaced tracker keeps its place in the order), tombstones of
-- those names are dropped, the periodic list follows the new
-- definitions, the version is bumped, the group marked dirty, ADDED queued
-- for each new tracker, and {"ok", version, fired lines} is returned with
-- fired lines "code\tstage\tprogress\tlimiter\tname".

redis.replicate_commands()
local now, now_us = clock()
local replace = ARGV[3] == '1'
if not replace then
  for i = 5, #ARGV, 5 do
    if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then return { 'conflict', ARGV[i] } end
  end
end
if redis.call('HEXISTS', KEYS[2], F_VERSION) == 0 then
  redis.call('HSET', KEYS[2], F_VERSION, fresh_version())
end
local fired_list = {}
local periodic = periodic_list()
local was_periodic = #periodic > 0
local by_name = {}
for i, e in ipairs(periodic) do by_name[e[2]] = i end
for i = 5, #ARGV, 5 do
  local name, hash, packed, expire, rules = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4]
  local old = redis.call('HGET', KEYS[2], name)
  local ord
  if old then
    local _, o = unpack_meta(old)
    ord = o
  else
    ord = redis.call('HINCRBY', KEYS[2], F_ORD, 1)
    local st = unpack_state(packed)
    fired_list[#fired_list + 1] = fired(EV_ADDED, name, st, nil)
  end
  local value = hash .. ',' .. ord
  if expire ~= '' then value = value .. ',' .. expire end
  redis.call('HSET', KEYS[2], name, value)
  redis.call('HSET', KEYS[1], name, packed)
  redis.call('SREM', KEYS[6], name)
  local at = by_name[name]
  if at then periodic[at][3] = rules end
  if rules ~= '' and not at then
    periodic[#periodic + 1] = { ord, name, rules }
    by_name[name] = #periodic
  end
end
local kept = {}
for _, e in ipairs(periodic) do
  if e[3] ~= '' then kept[#kept + 1] = e end
end
if was_periodic or #kept > 0 then periodic_save(kept) end
local version = bump_version()
mark_dirty(now_us)
queue(ARGV[1], ARGV[2], fired_list, now)
retime(tonumber(ARGV[4]))
local lines = {}
for _, f in ipairs(fired_list) do lines[#lines + 1] = fired_line(f) .. '\t' .. f.name end
return { 'ok', version, table.concat(lines, '\n') }
