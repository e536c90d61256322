-- lib.lua: helpers shared by every group script (prepended to each of them by
-- tracking/cache/redis.py before SCRIPT LOAD; it has no KEYS/ARGV of its own).
--
-- Every group script receives the same six keys, all under the group's hash
-- tag {<prefix>:<group_id>} so that a script touches a single cluster slot:
--   KEYS[1] state hash     tracker name -> packed state
--   KEYS[2] meta hash      "\1..." group fields; tracker name -> "hash,ord[,expire_at]"
--   KEYS[3] dedupe zset    event id -> time it was applied
--   KEYS[4] dedupe hash    event id -> the original reply body
--   KEYS[5] outbox hash    outbox event id -> "seq\tcode\tstage\tprogress\tlimiter\tts\tname"
--   KEYS[6] removed set    tracker names removed since the last flush (tombstones)
--
-- Numbers keep Python's int/float distinction: a number is carried as a string
-- and is a float exactly when that string contains ".", "e", "E" or "n"
-- (Python repr of floats always does; str of ints never does). Lua holds the
-- value as a double plus an is-float flag, does the engine's arithmetic on the
-- doubles (exact for integers within +-2**53, which tracking._validate
-- enforces for inputs) and formats floats with the shortest of %.15g/%.16g/%.17g
-- that reads back to the same double, so values round-trip exactly.
--
-- Packed state (well under 64 bytes, so small groups stay listpack-encoded):
--   progress ":" stage ":" flags [":" limiter value]* ["|" period id]
-- flags: bit 0 completed, bit 1 limited. The optional "|..." tail is kept
-- verbatim by every script (reserved for calendar-period ids).

local F_VERSION = '\1v'   -- definitions version (present <=> group installed)
local F_SEQ = '\1q'       -- last dirty sequence number handed out
local F_DIRTY = '\1d'     -- dirty mark (= sequence at the last change); absent when clean
local F_ORD = '\1n'       -- last tracker ordinal handed out (insertion order)
local F_OSEQ = '\1o'      -- last outbox sequence number handed out
local F_TTL = '\1e'       -- unix ms at which the whole group expires (see retime)

local EV_ADDED = 1001
local EV_STAGE_COMPLETED = 1002
local EV_ALL_COMPLETED = 1003
local EV_RESET = 1004
local EV_LIMITED = 1005
local EV_REMOVED = 1006
local EV_EXPIRED = 1007

local function is_float(s)
  return string.find(s, '[%.eEn]') ~= nil
end

local function fmt_num(v, f)
  if not f then
    return string.format('%d', v)
  end
  local s = string.format('%.15g', v)
  if tonumber(s) ~= v then
    s = string.format('%.16g', v)
    if tonumber(s) ~= v then
      s = string.format('%.17g', v)
    end
  end
  if not is_float(s) then
    s = s .. '.0'
  end
  return s
end

-- HDEL a list of fields in chunks (unpack has a stack limit).
local function hdel_many(key, fields)
  for i = 1, #fields, 1000 do
    redis.call('HDEL', key, unpack(fields, i, math.min(i + 999, #fields)))
  end
end

local function split(s, sep)
  local out = {}
  local start = 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

-- The clock: Redis TIME as float seconds (same arithmetic as Python's
-- int(sec) + int(usec) / 1_000_000) and as integer microseconds.
local function clock()
  local t = redis.call('TIME')
  local sec, usec = tonumber(t[1]), tonumber(t[2])
  return sec + usec / 1000000, sec * 1000000 + usec
end

local function unpack_state(s)
  local body, tail = s, ''
  local bar = string.find(s, '|', 1, true)
  if bar then
    body = string.sub(s, 1, bar - 1)
    tail = string.sub(s, bar)
  end
  local parts = split(body, ':')
  local flags = tonumber(parts[3])
  local st = {
    p = tonumber(parts[1]), pf = is_float(parts[1]),
    stage = tonumber(parts[2]),
    completed = flags % 2 == 1,
    limited = math.floor(flags / 2) % 2 == 1,
    lim = {}, limf = {}, tail = tail,
  }
  for i = 4, #parts do
    st.lim[#st.lim + 1] = tonumber(parts[i])
    st.limf[#st.limf + 1] = is_float(parts[i])
  end
  return st
end

local function pack_state(st)
  local flags = 0
  if st.completed then flags = flags + 1 end
  if st.limited then flags = flags + 2 end
  local out = { fmt_num(st.p, st.pf), string.format('%d', st.stage), tostring(flags) }
  for i = 1, #st.lim do
    out[#out + 1] = fmt_num(st.lim[i], st.limf[i])
  end
  return table.concat(out, ':') .. st.tail
end

-- Meta value of a tracker: "hash,ordinal[,expire_at]".
local function unpack_meta(s)
  local parts = split(s, ',')
  local expire = nil
  if parts[3] and parts[3] ~= '' then
    expire = tonumber(parts[3])
  end
  return parts[1], tonumber(parts[2]), expire
end

-- Rules of a definition, compiled by the worker (tracking/cache/redis.py
-- rules_of): "targets;loop_forever;reset_policy;limiters" where targets is a
-- comma list of numbers and limiters a comma list of "c<count>" / "t<interval>".
local RULES = {}
local function parse_rules(s)
  local cached = RULES[s]
  if cached then return cached end
  local parts = split(s, ';')
  local r = { targets = {}, loop = parts[2] == '1', policy = tonumber(parts[3]), lims = {} }
  for _, t in ipairs(split(parts[1], ',')) do
    r.targets[#r.targets + 1] = tonumber(t)
  end
  if parts[4] ~= '' then
    for _, l in ipairs(split(parts[4], ',')) do
      local kind = string.sub(l, 1, 1)
      local value = string.sub(l, 2)
      r.lims[#r.lims + 1] = { kind = kind, v = tonumber(value), vf = is_float(value) }
    end
  end
  RULES[s] = r
  return r
end

local function has_flag(policy, bit)
  return math.floor(policy / bit) % 2 == 1
end

-- engine.apply_reset_policy
local function apply_reset_policy(r, st, policy, now)
  if has_flag(policy, 1) then
    st.p, st.pf = 0, false
  end
  if has_flag(policy, 2) then
    for i, l in ipairs(r.lims) do
      if l.kind == 'c' then
        st.lim[i], st.limf[i] = l.v, l.vf
      else
        st.lim[i], st.limf[i] = now, true
      end
    end
    st.limited = false
  end
end

-- engine._exhausted_count_limiter (0-based index, or nil)
local function exhausted(r, st)
  for i, l in ipairs(r.lims) do
    if l.kind == 'c' and st.lim[i] <= 0 then return i - 1 end
  end
  return nil
end

-- engine._closed_time_window (0-based index, or nil)
local function closed_window(r, st, now)
  for i, l in ipairs(r.lims) do
    if l.kind == 't' then
      local start = st.lim[i]
      if not (start <= now and now <= start + l.v) then return i - 1 end
    end
  end
  return nil
end

local function fired(code, name, st, limiter)
  return { code = code, name = name, stage = st.stage, p = fmt_num(st.p, st.pf), lim = limiter }
end

-- engine.step: returns changed, refused, list of fired
local function step(r, name, st, delta, deltaf, now)
  local out = {}
  if st.completed then return false, false, out end
  if exhausted(r, st) ~= nil then return false, true, out end
  local closed = closed_window(r, st, now)
  if closed ~= nil then
    local changed = false
    if not st.limited then
      st.limited = true
      changed = true
      out[#out + 1] = fired(EV_LIMITED, name, st, closed)
    end
    return changed, true, out
  end
  st.limited = false
  for i, l in ipairs(r.lims) do
    if l.kind == 'c' then st.lim[i] = st.lim[i] - 1 end
  end
  st.p = st.p + delta
  st.pf = st.pf or deltaf
  local targets = r.targets
  while st.p >= targets[st.stage + 1] do
    if st.stage + 1 < #targets then
      out[#out + 1] = fired(EV_STAGE_COMPLETED, name, st, nil)
      st.stage = st.stage + 1
      apply_reset_policy(r, st, r.policy, now)
    elseif r.loop then
      out[#out + 1] = fired(EV_STAGE_COMPLETED, name, st, nil)
      apply_reset_policy(r, st, r.policy, now)
      break
    else
      st.completed = true
      st.limited = false
      out[#out + 1] = fired(EV_ALL_COMPLETED, name, st, nil)
      return true, false, out
    end
  end
  local ex = exhausted(r, st)
  if ex ~= nil and not st.limited then
    st.limited = true
    out[#out + 1] = fired(EV_LIMITED, name, st, ex)
  end
  return true, false, out
end

-- tracking.events.make_event_id: sha1 of length-prefixed parts, 32 hex chars.
local function event_id(source, group, name, code, index)
  local raw = #source .. ':' .. source .. '|' .. #group .. ':' .. group .. '|' ..
    #name .. ':' .. name .. '|' .. code .. '|' .. index
  return string.sub(redis.sha1hex(raw), 1, 32)
end

local function fired_line(f)
  local lim = ''
  if f.lim ~= nil then lim = string.format('%d', f.lim) end
  return f.code .. '\t' .. f.stage .. '\t' .. f.p .. '\t' .. lim
end

-- Append fired events to the outbox with deterministic ids (see event_id).
local function queue(source, group, list, ts)
  if #list == 0 then return end
  local last = redis.call('HINCRBY', KEYS[2], F_OSEQ, #list)
  local first = last - #list
  local tss = fmt_num(ts, true)
  local args = {}
  for i, f in ipairs(list) do
    args[#args + 1] = event_id(source, group, f.name, f.code, i - 1)
    args[#args + 1] = (first + i) .. '\t' .. fired_line(f) .. '\t' .. tss .. '\t' .. f.name
  end
  redis.call('HSET', KEYS[5], unpack(args))
end

-- Mark the group dirty with a fresh sequence number: the current time in
-- microseconds, or last + 1 if the clock has not moved on. Time-based so that
-- the mark keeps growing across a group's eviction and reinstall (stores
-- keep the record with the highest sequence).
local function mark_dirty(now_us)
  local last = tonumber(redis.call('HGET', KEYS[2], F_SEQ) or '0')
  local seq = now_us
  if seq <= last then seq = last + 1 end
  local s = string.format('%d', seq)
  redis.call('HSET', KEYS[2], F_SEQ, s, F_DIRTY, s)
  return s
end

local function bump_version()
  return redis.call('HINCRBY', KEYS[2], F_VERSION, 1)
end

-- Give every existing group key the group's TTL (if it has one).
local function apply_ttl()
  local at = redis.call('HGET', KEYS[2], F_TTL)
  if at then
    for i = 1, 6 do redis.call('PEXPIREAT', KEYS[i], at) end
  end
end

-- The group TTL rule: when the group holds trackers and every one of them
-- has an expire_at, all group keys expire `grace` seconds after the latest
-- expire_at (abandoned groups vanish); as soon as a tracker without
-- expire_at is present the keys persist. An emptied group keeps whatever
-- TTL it had.
local function retime(grace)
  local all = redis.call('HGETALL', KEYS[2])
  local count, latest, forever = 0, nil, false
  for i = 1, #all, 2 do
    if string.byte(all[i], 1) ~= 1 then
      count = count + 1
      local _, _, expire = unpack_meta(all[i + 1])
      if expire == nil then
        forever = true
      elseif latest == nil or expire > latest then
        latest = expire
      end
    end
  end
  if forever then
    if redis.call('HDEL', KEYS[2], F_TTL) == 1 then
      for i = 1, 6 do redis.call('PERSIST', KEYS[i]) end
    end
  elseif count > 0 then
    local at = string.format('%d', math.floor((latest + grace) * 1000))
    redis.call('HSET', KEYS[2], F_TTL, at)
    for i = 1, 6 do redis.call('PEXPIREAT', KEYS[i], at) end
  else
    apply_ttl()
  end
end

-- Trackers of the group as {name, hash, ord, expire}, in insertion order.
local function trackers_in_order()
  local all = redis.call('HGETALL', KEYS[2])
  local list = {}
  for i = 1, #all, 2 do
    if string.byte(all[i], 1) ~= 1 then
      local h, ord, expire = unpack_meta(all[i + 1])
      list[#list + 1] = { name = all[i], hash = h, ord = ord, expire = expire, meta = all[i + 1] }
    end
  end
  table.sort(list, function(a, b) return a.ord < b.ord end)
  return list
end

-- Remove one tracker (state + meta) and leave a tombstone; returns the
-- reply line "name\tpacked\tmeta" so the caller can rebuild it.
local function take(name, meta)
  local packed = redis.call('HGET', KEYS[1], name)
  redis.call('HDEL', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
  redis.call('SADD', KEYS[6], name)
  return packed, name .. '\t' .. packed .. '\t' .. meta
end
