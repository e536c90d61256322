-- remove.lua: remove trackers (all, or the named ones that exist), atomically.
--
-- KEYS[1..6]: the group's keys (one hash tag, one cluster slot), see lib.lua.
-- ARGV[1] source id (outbox event ids)
-- ARGV[2] group id (part of the outbox event ids)
-- ARGV[3] "1" to remove every tracker (insertion order), "0" for the named ones
-- ARGV[4] TTL grace in seconds (see retime in lib.lua)
-- ARGV[5..] tracker names (in the order REMOVED fires)
--
-- Each removed tracker leaves a tombstone; if any was removed the version is
-- bumped, the periodic list updated, the group marked dirty and
-- REMOVED queued. Returns one line per removed tracker,
-- "name\tpacked state\tmeta value", joined by "\n".

redis.replicate_commands()
local now, now_us = clock()
local wanted = {}
if ARGV[3] == '1' then
  for _, t in ipairs(trackers_in_order()) do wanted[#wanted + 1] = t.name end
else
  for i = 5, #ARGV do wanted[#wanted + 1] = ARGV[i] end
end
local lines, fired_list, gone = {}, {}, {}
for _, name in ipairs(wanted) do
  local meta = redis.call('HGET', KEYS[2], name)
  if meta then
    local packed, line = take(name, meta)
    lines[#lines + 1] = line
    gone[name] = true
    fired_list[#fired_list + 1] = fired(EV_REMOVED, name, unpack_state(packed), nil)
  end
end
if #lines > 0 then
  after_leaving(gone, fired_list, now_us, now, ARGV[1], ARGV[2], tonumber(ARGV[4]))
end
return table.concat(lines, '\n')
