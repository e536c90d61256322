-- reset.lua: reset trackers (engine.reset semantics), atomically.
--
-- KEYS[1..6]: the group's keys (one hash tag, one cluster slot), see lib.lua.
-- ARGV[1] source id (outbox event ids)
-- ARGV[2] group id (part of the outbox event ids)
-- ARGV[3] definitions version the rules below belong to
-- ARGV[4] reset policy, "" for each tracker's own
-- ARGV[5..] pairs: tracker name, rules JSON (see lib.lua)
--
-- Returns {"stale", version} if the version differs (nothing changes; the
-- caller reloads the definitions and retries), {"missing"} without the
-- group, else {"ok", lines} with one "name\tpacked state\tmeta value" line
-- per reset tracker. Does not bump the version (definitions are unchanged);
-- marks the group dirty and queues RESET when something was reset.

redis.replicate_commands()
local now, now_us = clock()
local version = redis.call('HGET', KEYS[2], F_VERSION)
if not version then return { 'missing' } end
if version ~= ARGV[3] then return { 'stale', version } end
local lines, fired_list = {}, {}
for i = 5, #ARGV, 2 do
  local name = ARGV[i]
  local meta = redis.call('HGET', KEYS[2], name)
  local packed = redis.call('HGET', KEYS[1], name)
  if meta and packed then
    local r = rules(ARGV[i + 1])
    local st = unpack_state(packed)
    local policy = r[3]
    if ARGV[4] ~= '' then policy = tonumber(ARGV[4]) end
    apply_reset_policy(r, st, policy, now)
    st.completed = false
    if exhausted(r, st) ~= nil then st.limited = true end
    local new = pack_state(st)
    redis.call('HSET', KEYS[1], name, new)
    lines[#lines + 1] = name .. '\t' .. new .. '\t' .. meta
    fired_list[#fired_list + 1] = fired(EV_RESET, name, st, nil)
  end
end
if #lines > 0 then
  mark_dirty(now_us)
  queue(ARGV[1], ARGV[2], fired_list, now)
  apply_ttl()
end
return { 'ok', table.concat(lines, '\n') }
