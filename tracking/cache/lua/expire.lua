-- expire.lua: remove a group's trackers whose expire_at has passed.
--
-- KEYS[1..6]: the group's keys (one hash tag, one cluster slot), see lib.lua.
-- ARGV[1] source id (outbox event ids)
-- ARGV[2] group id (part of the outbox event ids)
-- ARGV[3] now in seconds, "" for Redis TIME
-- ARGV[4] at most this many trackers
-- ARGV[5] TTL grace in seconds (see retime in lib.lua)
--
-- Due trackers go in insertion order, leave tombstones, and EXPIRED is
-- queued with timestamp now; the version is bumped, the periodic list
-- updated and the group marked dirty when any expired. Returns
-- {now, next expire_at or "", lines} with one "name\tpacked state\tmeta
-- value" line per expired tracker; the caller moves the group's entry in
-- the expiry index to the next expire_at.

redis.replicate_commands()
local now, now_us = clock()
if ARGV[3] ~= '' then now = tonumber(ARGV[3]) end
local limit = tonumber(ARGV[4])
local lines, fired_list, gone = {}, {}, {}
local next_at = nil
for _, t in ipairs(trackers_in_order()) do
  if t.expire ~= nil then
    if t.expire <= now and #lines < limit then
      local packed, line = take(t.name, t.meta)
      lines[#lines + 1] = line
      gone[t.name] = true
      fired_list[#fired_list + 1] = fired(EV_EXPIRED, t.name, unpack_state(packed), nil)
    elseif next_at == nil or t.expire < next_at then
      next_at = t.expire
    end
  end
end
if #lines > 0 then
  after_leaving(gone, fired_list, now_us, now, ARGV[1], ARGV[2], tonumber(ARGV[5]))
end
local nexts = ''
if next_at ~= nil then nexts = fmt_num(next_at, true) end
return { fmt_num(now, true), nexts, table.concat(lines, '\n') }
