-- lib.lua: helpers shared by every group script (prepended to each of them by
-- tracking/cache/redis/scripts.py before SCRIPT LOAD; it has no KEYS/ARGV of its own).
--
-- Every group script receives the same six keys, the group's, all under its
-- hash tag {<prefix>:<group_id>}, so a script touches one cluster slot only
-- (valid on Redis Cluster). The cross-group indexes (sharded sorted sets
-- without the hash tag) are written by the client after the script (in the
-- same pipeline on one server, after its reply on a cluster; see
-- tracking/cache/redis/indexes.py):
--   KEYS[1] state hash     tracker name -> packed state
--   KEYS[2] meta hash      "\1..." group fields; tracker name -> "hash,ord[,expire_at]"
--   KEYS[3] dedupe zset    event id -> time it was applied
--   KEYS[4] dedupe hash    event id -> digest: changed, limited, completed names
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
--   progress ":" stage ":" flags [":" limiter value]* ["|" period start]
-- flags: bit 0 completed, bit 1 limited; the period start (epoch seconds) is
-- present once a periodic tracker has been anchored to a calendar period.
--
-- Rules of a definition (tracking/cache/redis/codec.py rules_of) arrive as JSON
-- and are decoded by cjson (C, no Lua string splitting):
--   [targets, loop_forever (0/1), reset_policy, [[kind, value], ...], period_policy]
-- with limiter kind 1 = count (value: initial count, an int) and 2 = time
-- (value: interval seconds); period_policy is 0 for a tracker without a
-- calendar reset period. Rules only hold values that are compared or copied
-- as ints, so cjson's doubles are exact.

local F_VERSION = '\1v'   -- definitions version (present <=> group installed)
local F_SEQ = '\1q'       -- last dirty sequence number handed out
local F_DIRTY = '\1d'     -- dirty mark (= sequence at the last change); absent when clean
local F_ORD = '\1n'       -- last tracker ordinal handed out (insertion order)
local F_OSEQ = '\1o'      -- last outbox sequence number handed out
local F_TTL = '\1e'       -- unix ms at which the whole group expires (see retime)
local F_MINEXP = '\1x'    -- earliest expire_at of any tracker; absent when none expires
local F_PERIODIC = '\1p'  -- JSON [[ordinal, name, rules JSON], ...] of periodic trackers
local F_TRIM = '\1t'      -- time at which the dedupe records are next trimmed by age
local F_DCOUNT = '\1c'    -- dedupe records added since the last exact count (a trim trigger)
local F_WIDX = '\1w'      -- when the work index entry was last requested (see want_index)

-- How old (seconds) a work index request may get before apply asks again:
-- heals an index write lost to a client that died between the script and it.
local WIDX_REFRESH = 300

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

-- Packed state -> table {p, pf, stage, completed, limited, lim, limf, period}.
-- One string.match for the common head; limiters and period only if present.
local function unpack_state(s)
  local ptext, stage, flags, rest = string.match(s, '^([^:|]*):([^:|]*):([^:|]*)(.*)$')
  flags = tonumber(flags)
  local st = {
    p = tonumber(ptext), pf = is_float(ptext),
    stage = tonumber(stage),
    completed = flags % 2 == 1,
    limited = flags >= 2,
    lim = {}, limf = {}, period = nil,
  }
  if rest ~= '' then
    local bar = string.find(rest, '|', 1, true)
    if bar then
      st.period = tonumber(string.sub(rest, bar + 1))
      rest = string.sub(rest, 1, bar - 1)
    end
    local n = 0
    for part in string.gmatch(rest, '[^:]+') do
      n = n + 1
      st.lim[n] = tonumber(part)
      st.limf[n] = is_float(part)
    end
  end
  return st
end

local function pack_state(st)
  local flags = 0
  if st.completed then flags = flags + 1 end
  if st.limited then flags = flags + 2 end
  local out = fmt_num(st.p, st.pf) .. ':' .. string.format('%d', st.stage) .. ':' .. flags
  for i = 1, #st.lim do
    out = out .. ':' .. fmt_num(st.lim[i], st.limf[i])
  end
  if st.period ~= nil then out = out .. '|' .. string.format('%d', st.period) end
  return out
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

local function has_flag(policy, bit)
  return math.floor(policy / bit) % 2 == 1
end

-- engine.apply_reset_policy (r: decoded rules, see the header)
local function apply_reset_policy(r, st, policy, now)
  if has_flag(policy, 1) then
    st.p, st.pf = 0, false
  end
  if has_flag(policy, 2) then
    for i, l in ipairs(r[4]) do
      if l[1] == 1 then
        st.lim[i], st.limf[i] = l[2], false
      else
        st.lim[i], st.limf[i] = now, true
      end
    end
    st.limited = false
  end
end

-- engine._exhausted_count_limiter (0-based index, or nil)
local function exhausted(r, st)
  for i, l in ipairs(r[4]) do
    if l[1] == 1 and st.lim[i] <= 0 then return i - 1 end
  end
  return nil
end

-- engine._closed_time_window (0-based index, or nil)
local function closed_window(r, st, now)
  for i, l in ipairs(r[4]) do
    if l[1] == 2 then
      local start = st.lim[i]
      if not (start <= now and now <= start + l[2]) then return i - 1 end
    end
  end
  return nil
end

local function fired(code, name, st, limiter)
  return { code = code, name = name, stage = st.stage, p = fmt_num(st.p, st.pf), lim = limiter }
end

-- engine.step: returns changed, refused, list of fired (nil when none fired)
local function step(r, name, st, delta, deltaf, now)
  if st.completed then return false, false, nil end
  local lims = r[4]
  if #lims > 0 then
    if exhausted(r, st) ~= nil then return false, true, nil end
    local closed = closed_window(r, st, now)
    if closed ~= nil then
      if st.limited then return false, true, nil end
      st.limited = true
      return true, true, { fired(EV_LIMITED, name, st, closed) }
    end
    for i, l in ipairs(lims) do
      if l[1] == 1 then st.lim[i] = st.lim[i] - 1 end
    end
  end
  st.limited = false
  st.p = st.p + delta
  st.pf = st.pf or deltaf
  local targets = r[1]
  local out = nil
  while st.p >= targets[st.stage + 1] do
    out = out or {}
    if st.stage + 1 < #targets then
      out[#out + 1] = fired(EV_STAGE_COMPLETED, name, st, nil)
      st.stage = st.stage + 1
      apply_reset_policy(r, st, r[3], now)
    elseif r[2] == 1 then
      out[#out + 1] = fired(EV_STAGE_COMPLETED, name, st, nil)
      apply_reset_policy(r, st, r[3], now)
      break
    else
      st.completed = true
      st.limited = false
      out[#out + 1] = fired(EV_ALL_COMPLETED, name, st, nil)
      return true, false, out
    end
  end
  if #lims > 0 then
    local ex = exhausted(r, st)
    if ex ~= nil and not st.limited then
      st.limited = true
      out = out or {}
      out[#out + 1] = fired(EV_LIMITED, name, st, ex)
    end
  end
  return true, false, out
end

-- Decoded rules by their JSON text. Rules are read-only, so under Redis
-- Functions (where library-level state outlives a call) the cache saves the
-- decode on later events too; bounded, it is simply dropped when full.
local RULES, RULES_COUNT = {}, 0
local function rules(text)
  local r = RULES[text]
  if r == nil then
    r = cjson.decode(text)
    if RULES_COUNT >= 10000 then
      RULES, RULES_COUNT = {}, 0
    end
    RULES[text] = r
    RULES_COUNT = RULES_COUNT + 1
  end
  return r
end

-- engine.step for the commonest case, on the packed text without unpacking
-- it: a tracker without limiters, neither completed nor limited, whose int
-- progress plus an int delta stays below the current target. Then only the
-- progress changes (changed, nothing refused or fired) and the rest of the
-- record is kept verbatim. Returns the new packed state, or nil when the
-- case does not apply (the caller runs step on the unpacked state).
-- The verdicts on a delta text and on a record's tail (":stage:flags[|period]")
-- are remembered (few distinct ones; bounded like RULES): on the hot path
-- only the progress is parsed.
local INT_DELTA, TAIL_STAGE, FAST_COUNT = {}, {}, 0
local function fast_verdicts_full()
  FAST_COUNT = FAST_COUNT + 1
  if FAST_COUNT > 10000 then
    INT_DELTA, TAIL_STAGE, FAST_COUNT = {}, {}, 0
  end
end
local function fast_step(packed, r, delta)
  if r[4][1] ~= nil then return nil end
  local d = INT_DELTA[delta]
  if d == nil then
    d = string.match(delta, '^%-?%d+$') ~= nil and tonumber(delta)
    fast_verdicts_full()
    INT_DELTA[delta] = d
  end
  if not d then return nil end
  local ptext = string.match(packed, '^(%-?%d+):')
  if not ptext then return nil end
  local tail = string.sub(packed, #ptext + 1)
  local stage = TAIL_STAGE[tail]
  if stage == nil then
    local text = string.match(tail, '^:(%d+):0|?%d*$')
    stage = text ~= nil and tonumber(text) + 1
    fast_verdicts_full()
    TAIL_STAGE[tail] = stage
  end
  if not stage then return nil end
  local p = tonumber(ptext) + d
  if p >= r[1][stage] then return nil end
  return string.format('%d', p) .. tail
end

-- engine.roll_period: move a periodic tracker into the period starting at
-- `start`; returns changed, and the RESET fired (or nil).
local function roll_period(r, name, st, start, now)
  if st.period == start then return false, nil end
  if st.period == nil then
    st.period = start
    return true, nil
  end
  if st.period > start then return false, nil end
  st.period = start
  local policy = r[5]
  if has_flag(policy, 1) then
    st.stage = 0
    st.completed = false
  end
  apply_reset_policy(r, st, policy, now)
  if exhausted(r, st) ~= nil then st.limited = true end
  return true, fired(EV_RESET, name, st, nil)
end

-- tracking.events.make_event_id: sha1 of length-prefixed parts, 32 hex chars.
-- `head` is the source and group part, the same for every event of a call.
local function event_id_head(source, group)
  return #source .. ':' .. source .. '|' .. #group .. ':' .. group .. '|'
end

local function event_id(head, name, code, index)
  return string.sub(redis.sha1hex(head .. #name .. ':' .. name .. '|' .. code .. '|' .. index), 1, 32)
end

-- "code\tstage\tprogress\tlimiter" of a fired event (computed once per event).
local function fired_line(f)
  local line = f.line
  if line == nil then
    local lim = ''
    if f.lim ~= nil then lim = string.format('%d', f.lim) end
    line = f.code .. '\t' .. f.stage .. '\t' .. f.p .. '\t' .. lim
    f.line = line
  end
  return line
end

-- The HSET arguments that append fired events to the outbox with
-- deterministic ids (see event_id), numbered after outbox sequence `last`.
local function outbox_args(source, group, list, ts, last)
  local tss = fmt_num(ts, true)
  local head = event_id_head(source, group)
  local args = {}
  for i, f in ipairs(list) do
    args[#args + 1] = event_id(head, f.name, f.code, i - 1)
    args[#args + 1] = (last + i) .. '\t' .. fired_line(f) .. '\t' .. tss .. '\t' .. f.name
  end
  return args
end

-- Append fired events to the outbox (admin scripts; apply batches its own writes).
local function queue(source, group, list, ts)
  if #list == 0 then return end
  local last = redis.call('HINCRBY', KEYS[2], F_OSEQ, #list)
  redis.call('HSET', KEYS[5], unpack(outbox_args(source, group, list, ts, last - #list)))
end

-- The next dirty sequence number: the current time in microseconds, or
-- last + 1 if the clock has not moved on. Time-based so that the mark keeps
-- growing across a group's eviction and reinstall (stores keep the record
-- with the highest sequence).
local function next_seq(last, now_us)
  local seq = now_us
  local prev = tonumber(last or '0')
  if seq <= prev then seq = prev + 1 end
  return string.format('%d', seq)
end

-- Whether the client must (re)write the group's work index entry after this
-- apply (tracking/cache/redis/indexes.py): yes when no request is recorded
-- (the sweepers clear it, atomically, only for clean groups without outbox
-- entries) or the last one is WIDX_REFRESH old. Records the request in `fields`.
local function want_index(recorded, now, fields)
  if recorded and tonumber(recorded) > now - WIDX_REFRESH then return '0' end
  fields[#fields + 1] = F_WIDX
  fields[#fields + 1] = fmt_num(math.floor(now), false)
  return '1'
end

-- Mark the group dirty (admin scripts; the client adds the group to the work index).
local function mark_dirty(now_us)
  local s = next_seq(redis.call('HGET', KEYS[2], F_SEQ), now_us)
  redis.call('HSET', KEYS[2], F_SEQ, s, F_DIRTY, s)
  return s
end

-- The version of a freshly installed or created group: Redis TIME in
-- microseconds, as a canonical integer string (apply.lua compares strings).
-- An earlier incarnation of the group (evicted, or lost with the server)
-- reached at most its own install time plus one per bump, and each bump is a
-- script run taking more than a microsecond, so a new incarnation never
-- reuses a version a worker may still hold definitions for (as long as the
-- server's clock does not step back).
local function fresh_version()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end

local function bump_version()
  return redis.call('HINCRBY', KEYS[2], F_VERSION, 1)
end

-- Give every existing group key the group's TTL (if it has one).
local function apply_ttl(at)
  if at == nil then at = redis.call('HGET', KEYS[2], F_TTL) end
  if at then
    for i = 1, 6 do redis.call('PEXPIREAT', KEYS[i], at) end
  end
end

-- The group TTL rule: when the group holds trackers and every one of them
-- has an expire_at, all group keys expire `grace` seconds after the latest
-- expire_at (abandoned groups vanish); as soon as a tracker without
-- expire_at is present the keys persist. An emptied group keeps whatever
-- TTL it had. Also records the earliest expire_at (F_MINEXP), which lets
-- apply skip per-tracker expiry checks while no tracker can have expired.
local function retime(grace)
  local all = redis.call('HGETALL', KEYS[2])
  local count, latest, earliest, forever = 0, nil, nil, false
  for i = 1, #all, 2 do
    if string.byte(all[i], 1) ~= 1 then
      count = count + 1
      local _, _, expire = unpack_meta(all[i + 1])
      if expire == nil then
        forever = true
      else
        if latest == nil or expire > latest then latest = expire end
        if earliest == nil or expire < earliest then earliest = expire end
      end
    end
  end
  if earliest == nil then
    redis.call('HDEL', KEYS[2], F_MINEXP)
  else
    redis.call('HSET', KEYS[2], F_MINEXP, fmt_num(earliest, true))
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

-- The periodic trackers of the group: {{ordinal, name, rules JSON}, ...}.
local function periodic_list()
  local raw = redis.call('HGET', KEYS[2], F_PERIODIC)
  if not raw then return {} end
  return cjson.decode(raw)
end

-- Store the periodic trackers (in insertion order). The client adds the
-- group to the periodic index; periodic_groups prunes entries of groups
-- that no longer hold one.
local function periodic_save(list)
  if #list == 0 then
    redis.call('HDEL', KEYS[2], F_PERIODIC)
  else
    table.sort(list, function(a, b) return a[1] < b[1] end)
    redis.call('HSET', KEYS[2], F_PERIODIC, cjson.encode(list))
  end
end

-- Forget removed trackers in the periodic list (names: set name -> true).
local function periodic_forget(names)
  local raw = redis.call('HGET', KEYS[2], F_PERIODIC)
  if not raw then return end
  local kept = {}
  for _, e in ipairs(cjson.decode(raw)) do
    if not names[e[2]] then kept[#kept + 1] = e end
  end
  periodic_save(kept)
end

-- After trackers left the group (removed or expired): forget the periodic
-- ones, bump the definitions version, mark the group dirty, queue the fired
-- events and re-time the group's TTL (grace: seconds after the last expiry).
local function after_leaving(gone, fired_list, now_us, now, source, group, grace)
  periodic_forget(gone)
  bump_version()
  mark_dirty(now_us)
  queue(source, group, fired_list, now)
  retime(grace)
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
