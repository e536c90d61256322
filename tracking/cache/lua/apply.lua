-- apply.lua: one event on one group, atomically (the hot path).
--
-- KEYS[1..6]: the group's keys (one hash tag, one cluster slot), see lib.lua.
-- ARGV[1] event id (deduplicated within the window)
-- ARGV[2] definitions version the caller evaluated the conditions against
-- ARGV[3] source id for outbox event ids (the event id unless given)
-- ARGV[4] group id (part of the outbox event ids)
-- ARGV[5] dedupe window in seconds
-- ARGV[6] dedupe max entries (per group)
-- ARGV[7] TTL grace in seconds (see retime in lib.lua)
-- ARGV[8] period bounds, JSON {"name": [start, end], ...}, or "" for none
-- ARGV[9..] triples: tracker name, delta (typed number), rules JSON (see lib.lua;
--           decoded once per distinct rules string: trackers often share them)
--
-- Order, as MemoryDataCache.apply: a duplicate event id (seen within the
-- window and among the group's newest max entries) returns {"dup", ...} with
-- the remembered names and the current states of those that still exist;
-- {"missing", "0", now} without the group; {"stale", version, now} when the
-- version differs; {"clock", version, now} when Redis TIME lies outside a
-- given period bound (nothing changes: the caller recomputes them). Then the
-- group's periodic trackers that have bounds are rolled into their period in
-- insertion order (RESET fires first), and engine.step runs for every named
-- tracker present and not expired, in ARGV order. Completed trackers without
-- a period are deleted (tombstoned); periodic ones stay. Fired events go to
-- the outbox; a change marks the group dirty (the client indexes it);
-- the outcome's names are remembered for dedupe.
--
-- Reply: {kind, version, now, states, changed, limited, completed, fired, widx}:
-- states "name\tpacked\tname\tpacked..." (every tracker rolled or stepped),
-- the name lists joined by "\t", fired lines
-- "code\tstage\tprogress\tlimiter\tname" joined by "\n", widx "1" when the
-- client must write the group's work index entry (see want_index in lib.lua).

redis.replicate_commands()
local now, now_us = clock()
local nows = fmt_num(now, true)
local eid = ARGV[1]
local window = tonumber(ARGV[5])
local max_entries = tonumber(ARGV[6])

-- Dedupe: the digest is "changed\nlimited\ncompleted", names joined by "\t".
local digest = redis.call('HGET', KEYS[4], eid)
if digest then
  local seen = redis.call('ZSCORE', KEYS[3], eid)
  local rank = redis.call('ZREVRANK', KEYS[3], eid)
  if seen and tonumber(seen) >= now - window and rank and rank < max_entries then
    local version = redis.call('HGET', KEYS[2], F_VERSION) or '0'
    local lists = split(digest, '\n')
    local names, known = {}, {}
    for i = 1, 3 do
      if lists[i] ~= '' then
        for _, name in ipairs(split(lists[i], '\t')) do
          if not known[name] then
            known[name] = true
            names[#names + 1] = name
          end
        end
      end
    end
    local states = {}
    if #names > 0 then
      local packed = redis.call('HMGET', KEYS[1], unpack(names))
      for i, name in ipairs(names) do
        if packed[i] then
          states[#states + 1] = name
          states[#states + 1] = packed[i]
        end
      end
    end
    return { 'dup', version, nows, table.concat(states, '\t'), lists[1], lists[2], lists[3], '' }
  end
end

local meta = redis.call('HMGET', KEYS[2], F_VERSION, F_SEQ, F_TTL, F_MINEXP, F_PERIODIC, F_TRIM,
  F_OSEQ, F_DIRTY, F_DCOUNT, F_WIDX)
local version = meta[1]
if not version then return { 'missing', '0', nows } end
if version ~= ARGV[2] then return { 'stale', version, nows } end

local rolls = {}
if ARGV[8] ~= '' then
  local periods = cjson.decode(ARGV[8])
  for _, b in pairs(periods) do
    if not (b[1] <= now and now < b[2]) then return { 'clock', version, nows } end
  end
  if meta[5] then
    for _, e in ipairs(cjson.decode(meta[5])) do
      local b = periods[e[2]]
      if b then rolls[#rolls + 1] = { e[2], rules(e[3]), b[1] } end
    end
  end
end

-- Read every involved state in one HMGET (and expiry only if one may be due).
local names, slot = {}, {}
for _, ro in ipairs(rolls) do
  if not slot[ro[1]] then
    names[#names + 1] = ro[1]
    slot[ro[1]] = #names
  end
end
for i = 9, #ARGV, 3 do
  local name = ARGV[i]
  if not slot[name] then
    names[#names + 1] = name
    slot[name] = #names
  end
end
local packed, dead = {}, {}
if #names > 0 then
  packed = redis.call('HMGET', KEYS[1], unpack(names))
  if meta[4] and tonumber(meta[4]) <= now then
    local metas = redis.call('HMGET', KEYS[2], unpack(names))
    for i, m in ipairs(metas) do
      if m then
        local _, _, expire = unpack_meta(m)
        if expire ~= nil and expire <= now then dead[i] = true end
      else
        dead[i] = true
      end
    end
  end
end
-- A tracker's state: unpacked on first use (from a fast step's result if
-- one ran), or nil when it is missing or expired.
local states, fast = {}, {}
local function live_state(name)
  local i = slot[name]
  if not packed[i] or dead[i] then return nil end
  local st = states[name]
  if st == nil then
    st = unpack_state(fast[name] or packed[i])
    fast[name] = nil
    states[name] = st
  end
  return st
end

local changed_l, limited_l, completed_l, fired_all = {}, {}, {}, {}
local is_changed, touched, is_touched, removed, is_removed = {}, {}, {}, {}, {}
local function touch(name)
  if not is_touched[name] then
    is_touched[name] = true
    touched[#touched + 1] = name
  end
end

for _, ro in ipairs(rolls) do
  local name = ro[1]
  local st = live_state(name)
  if st then
    local changed, reset = roll_period(ro[2], name, st, ro[3], now)
    if reset then fired_all[#fired_all + 1] = reset end
    if changed then
      changed_l[#changed_l + 1] = name
      is_changed[name] = true
      touch(name)
    end
  end
end

for i = 9, #ARGV, 3 do
  local name, delta = ARGV[i], ARGV[i + 1]
  local r = RULES[ARGV[i + 2]] or rules(ARGV[i + 2])
  local k = slot[name]
  local quick = nil
  if states[name] == nil and fast[name] == nil and packed[k] and not dead[k] then
    quick = fast_step(packed[k], r, delta)
  end
  local st = nil
  if quick then
    -- untouched so far (neither rolled nor stepped): no flag to check
    fast[name] = quick
    changed_l[#changed_l + 1] = name
    is_changed[name] = true
    is_touched[name] = true
    touched[#touched + 1] = name
  else
    st = live_state(name)
  end
  if st then
    local changed, refused, fired_list = step(r, name, st, tonumber(delta), is_float(delta), now)
    local completed, limited = false, refused
    if fired_list then
      for _, f in ipairs(fired_list) do
        fired_all[#fired_all + 1] = f
        if f.code == EV_ALL_COMPLETED then completed = true end
        if f.code == EV_LIMITED then limited = true end
      end
    end
    if changed and not is_changed[name] then
      changed_l[#changed_l + 1] = name
      is_changed[name] = true
    end
    if limited then limited_l[#limited_l + 1] = name end
    if completed then
      completed_l[#completed_l + 1] = name
      if r[5] == 0 and not is_removed[name] then
        removed[#removed + 1] = name
        is_removed[name] = true
      end
    end
    touch(name)
  end
end

-- Writes: one HSET of the changed states, one of the group fields.
-- sparts ("name, packed" of every touched tracker) is also the reply's states
-- and, when every touched tracker changed and none was removed (the common
-- case), exactly the HSET's arguments.
local packs, sparts = {}, {}
for j, name in ipairs(touched) do
  local p = fast[name] or pack_state(states[name])
  packs[name] = p
  sparts[2 * j - 1] = name
  sparts[2 * j] = p
end
local writes = sparts
if #changed_l ~= #touched or #removed > 0 then
  local n = 0
  writes = {}
  for _, name in ipairs(changed_l) do
    if not is_removed[name] then
      writes[n + 1] = name
      writes[n + 2] = packs[name]
      n = n + 2
    end
  end
end
if #writes > 0 then redis.call('HSET', KEYS[1], unpack(writes)) end
if #removed > 0 then
  redis.call('HDEL', KEYS[1], unpack(removed))
  redis.call('HDEL', KEYS[2], unpack(removed))
  redis.call('SADD', KEYS[6], unpack(removed))
end

local fields = {}
if #changed_l > 0 then
  local seq = next_seq(meta[2], now_us)
  fields[#fields + 1] = F_SEQ
  fields[#fields + 1] = seq
  fields[#fields + 1] = F_DIRTY
  fields[#fields + 1] = seq
end
if #fired_all > 0 then
  local last = tonumber(meta[7] or '0')
  redis.call('HSET', KEYS[5], unpack(outbox_args(ARGV[3], ARGV[4], fired_all, now, last)))
  fields[#fields + 1] = F_OSEQ
  fields[#fields + 1] = string.format('%d', last + #fired_all)
end
-- The work index entry: on one server the client writes it after every
-- apply in the same pipeline; on a cluster only after a reply that asks.
local widx = '0'
if #fields > 0 then widx = want_index(meta[10], now, fields) end

-- Remember the outcome's names; trim by age (amortised: only once the
-- oldest record is a window plus some slack old; lookups check the window
-- themselves) and by count (once it exceeds max plus some slack; lookups
-- check the rank themselves), so each trim removes a batch. The count kept
-- in the meta hash only triggers the exact ZCARD, so it may lag safely.
redis.call('HSET', KEYS[4], eid, table.concat(changed_l, '\t') .. '\n' ..
  table.concat(limited_l, '\t') .. '\n' .. table.concat(completed_l, '\t'))
local count = tonumber(meta[9] or '0') + redis.call('ZADD', KEYS[3], nows, eid)
local trim_at = meta[6]
if not trim_at then
  fields[#fields + 1] = F_TRIM
  fields[#fields + 1] = fmt_num(now + window * 1.125, true)
elseif tonumber(trim_at) <= now then
  local cutoff = '(' .. fmt_num(now - window, true)
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', cutoff)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff)
    hdel_many(KEYS[4], old)
    count = count - #old
  end
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  fields[#fields + 1] = F_TRIM
  fields[#fields + 1] = fmt_num(tonumber(oldest[2]) + window * 1.125, true)
end
if count > max_entries + math.floor(max_entries / 8) then
  count = redis.call('ZCARD', KEYS[3])
  if count > max_entries then
    local extra = redis.call('ZRANGE', KEYS[3], 0, count - max_entries - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, count - max_entries - 1)
    hdel_many(KEYS[4], extra)
    count = max_entries
  end
end
fields[#fields + 1] = F_DCOUNT
fields[#fields + 1] = string.format('%d', count)
redis.call('HSET', KEYS[2], unpack(fields))

if #removed > 0 then
  retime(tonumber(ARGV[7]))
elseif meta[3] then
  apply_ttl(meta[3])
end

local flines = {}
for _, f in ipairs(fired_all) do flines[#flines + 1] = fired_line(f) .. '\t' .. f.name end
return { 'ok', version, nows, table.concat(sparts, '\t'), table.concat(changed_l, '\t'),
  table.concat(limited_l, '\t'), table.concat(completed_l, '\t'), table.concat(flines, '\n'), widx }
