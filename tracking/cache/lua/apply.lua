-- apply.lua: one event on one group, atomically (the hot path).
--
-- KEYS[1..6]: the group keys (state, meta, dedupe zset, dedupe hash, outbox,
--             removed), see lib.lua.
-- ARGV[1] event id (deduplicated within the window)
-- ARGV[2] definitions version the caller evaluated the conditions against
-- ARGV[3] source id for outbox event ids (the event id unless given)
-- ARGV[4] group id (part of the outbox event ids)
-- ARGV[5] dedupe window in seconds
-- ARGV[6] dedupe max entries (per group)
-- ARGV[7] TTL grace in seconds (see retime in lib.lua)
-- ARGV[8..] triples: tracker name, delta (typed number), rules (see parse_rules)
--
-- Steps: dedupe lookup (a repeat returns {"dup", original body}); {"missing",
-- now} when the group is not installed; {"stale", version, now} when the
-- version differs; otherwise engine.step for every named tracker present and
-- not expired, in ARGV order; completed trackers are deleted (tombstoned);
-- fired events go to the outbox; the group is marked dirty if anything
-- changed; the reply body is stored for dedupe and returned as {"ok", body}.
--
-- Reply body: lines separated by "\n" (names never hold control characters):
--   "applied\t<version>\t<now>"
--   "s\t<name>\t<packed state>"       state after the event, per touched tracker
--   "c\t<name>" / "l\t<name>" / "d\t<name>"  changed / limited / completed
--   "f\t<code>\t<stage>\t<progress>\t<limiter>\t<name>"  fired, in order

redis.replicate_commands()
local now, now_us = clock()
local eid = ARGV[1]
local window = tonumber(ARGV[5])

local seen = redis.call('ZSCORE', KEYS[3], eid)
if seen and tonumber(seen) >= now - window then
  local body = redis.call('HGET', KEYS[4], eid)
  if body then return { 'dup', body } end
end

local version = redis.call('HGET', KEYS[2], F_VERSION)
local nows = fmt_num(now, true)
if not version then return { 'missing', nows } end
if version ~= ARGV[2] then return { 'stale', version, nows } end

local names, deltas, rules = {}, {}, {}
for i = 8, #ARGV, 3 do
  names[#names + 1] = ARGV[i]
  deltas[#deltas + 1] = ARGV[i + 1]
  rules[#rules + 1] = ARGV[i + 2]
end

local lines = { 'applied\t' .. version .. '\t' .. nows }
local changed_l, limited_l, completed_l, fired_all = {}, {}, {}, {}
local any_changed = false
local completed_names = {}
if #names > 0 then
  local packed = redis.call('HMGET', KEYS[1], unpack(names))
  local metas = redis.call('HMGET', KEYS[2], unpack(names))
  for i, name in ipairs(names) do
    local p, m = packed[i], metas[i]
    local live = p and m
    if live then
      local _, _, expire = unpack_meta(m)
      if expire ~= nil and expire <= now then live = false end
    end
    if live then
      local r = parse_rules(rules[i])
      local st = unpack_state(p)
      local delta = deltas[i]
      local changed, refused, fired_list = step(r, name, st, tonumber(delta), is_float(delta), now)
      local completed = false
      local limited = refused
      for _, f in ipairs(fired_list) do
        fired_all[#fired_all + 1] = f
        if f.code == EV_ALL_COMPLETED then completed = true end
        if f.code == EV_LIMITED then limited = true end
      end
      local new = pack_state(st)
      lines[#lines + 1] = 's\t' .. name .. '\t' .. new
      if changed then
        changed_l[#changed_l + 1] = 'c\t' .. name
        any_changed = true
        if not completed then redis.call('HSET', KEYS[1], name, new) end
      end
      if limited then limited_l[#limited_l + 1] = 'l\t' .. name end
      if completed then
        completed_l[#completed_l + 1] = 'd\t' .. name
        completed_names[#completed_names + 1] = name
      end
    end
  end
end

for _, name in ipairs(completed_names) do
  redis.call('HDEL', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
  redis.call('SADD', KEYS[6], name)
end
if any_changed then mark_dirty(now_us) end
queue(ARGV[3], ARGV[4], fired_all, now)

for _, l in ipairs(changed_l) do lines[#lines + 1] = l end
for _, l in ipairs(limited_l) do lines[#lines + 1] = l end
for _, l in ipairs(completed_l) do lines[#lines + 1] = l end
for _, f in ipairs(fired_all) do
  lines[#lines + 1] = 'f\t' .. fired_line(f) .. '\t' .. f.name
end
local body = table.concat(lines, '\n')

-- Remember the outcome; trim by age (strictly older than the window) and count.
local max_entries = tonumber(ARGV[6])
redis.call('ZADD', KEYS[3], now, eid)
redis.call('HSET', KEYS[4], eid, body)
local cutoff = '(' .. fmt_num(now - window, true)
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', cutoff)
if #old > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff)
  hdel_many(KEYS[4], old)
end
local count = redis.call('ZCARD', KEYS[3])
if count > max_entries then
  local extra = redis.call('ZRANGE', KEYS[3], 0, count - max_entries - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, count - max_entries - 1)
  hdel_many(KEYS[4], extra)
end

if #completed_names > 0 then
  retime(tonumber(ARGV[7]))
else
  apply_ttl()
end
return { 'ok', body }
