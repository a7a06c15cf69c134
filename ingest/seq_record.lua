-- EnerLink ingest: the per-meter seq record (Keys.seq_record), shared by the scripts that read or
-- change it (this file is prepended to store.lua, confirm_claim.lua, confirm_done.lua and
-- resend_claim.lua; see ingest/seq_record.py for the format and its meaning), with the clock and the
-- due sets those scripts read.
--
-- Text: 't:<ms>;c:<through>;r:<ranges>;k:<ms>;u:<ms>;a:<attempts>;g:<seq>;e:<ms>;z:<seq>', fields
-- absent when 0/empty.
--   t  newest message datetime (epoch ms) recorded        c  every seq 1..c is known
--   r  known ranges beyond c ('a-b' or 'a' for one seq, comma separated, ascending, not adjacent)
--   k  when the last confirmation was claimed (Redis ms)   u  when scheduled in confirm_due since then
--   a  resend requests since the record had
--   no hole                                                g  holes at or below g are old enough to ask for
--   e, z  datetime and seq of the message that restarted the record (re-flash): a message older than e
--   with a seq >= z is from before the restart and is not recorded
-- "Known" = stored in Redis, or declared not held by the meter (never asked again).

local REC_MAX_RANGES = 256

-- Redis's clock in ms (every script dates from it, never from the worker's clock).
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The meters of a due set (meter -> Redis ms from when it is due) due by now, at most limit.
local function due_meters(key, now, limit)
  return redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, limit)
end

-- Integers are written with %d (four times cheaper than %.0f in Redis's Lua, the same text for any
-- integer of at most 2^53, which every field is); anything else keeps %.0f.
local REC_EXACT = 9007199254740992
local rec_floor = math.floor

local function rec_exact(x)
  return x <= REC_EXACT and x >= -REC_EXACT and x == rec_floor(x)
end

local function rec_num(x)
  if rec_exact(x) then
    return string.format('%d', x)
  end
  return string.format('%.0f', x)
end

local function rec_parse(raw)
  local r = {t = 0, c = 0, r = {}, k = 0, u = 0, a = 0, g = 0, e = 0, z = 0}
  if not raw then
    return r
  end
  -- the usual record (nothing missing, confirmed, scheduled again) in one match
  local t, c, k, u = string.match(raw, '^t:(%d+);c:(%d+);k:(%d+);u:(%d+)$')
  if t then
    r.t, r.c, r.k, r.u = tonumber(t), tonumber(c), tonumber(k), tonumber(u)
    return r
  end
  -- just claimed for a confirmation (u not yet set again)
  t, c, k = string.match(raw, '^t:(%d+);c:(%d+);k:(%d+)$')
  if t then
    r.t, r.c, r.k = tonumber(t), tonumber(c), tonumber(k)
    return r
  end
  for key, val in string.gmatch(raw, '(%a):([^;]*)') do
    if key == 'r' then
      local list = r.r
      for token in string.gmatch(val, '[^,]+') do
        local x, y = string.match(token, '^(%d+)%-(%d+)$')
        if x then
          list[#list + 1] = tonumber(x)
          list[#list + 1] = tonumber(y)
        else
          local v = tonumber(token)
          list[#list + 1] = v
          list[#list + 1] = v
        end
      end
    else
      r[key] = tonumber(val) or 0
    end
  end
  return r
end

local function rec_ranges_text(list)
  local parts = {}
  for i = 1, #list, 2 do
    if list[i] == list[i + 1] then
      parts[#parts + 1] = rec_num(list[i])
    else
      parts[#parts + 1] = rec_num(list[i]) .. '-' .. rec_num(list[i + 1])
    end
  end
  return table.concat(parts, ',')
end

local function rec_text(r)
  if #r.r == 0 and r.a == 0 and r.g == 0 and r.e == 0 and r.k > 0 and r.u > 0 and rec_exact(r.t)
    and rec_exact(r.c) and rec_exact(r.k) and rec_exact(r.u) then
    return string.format('t:%d;c:%d;k:%d;u:%d', r.t, r.c, r.k, r.u) -- the usual record
  end
  local out = 't:' .. rec_num(r.t) .. ';c:' .. rec_num(r.c)
  if #r.r > 0 then
    out = out .. ';r:' .. rec_ranges_text(r.r)
  end
  if r.k > 0 then
    out = out .. ';k:' .. rec_num(r.k)
  end
  if r.u > 0 then
    out = out .. ';u:' .. rec_num(r.u)
  end
  if r.a > 0 or r.g > 0 then
    out = out .. ';a:' .. rec_num(r.a) .. ';g:' .. rec_num(r.g)
  end
  if r.e > 0 then
    out = out .. ';e:' .. rec_num(r.e) .. ';z:' .. rec_num(r.z)
  end
  return out
end

local function rec_high(r)
  if #r.r > 0 then
    return r.r[#r.r]
  end
  return r.c
end

-- merge [x, y] into the known ranges; returns how many seqs were not known before
local function rec_add_range(r, x, y)
  if y <= r.c then
    return 0
  end
  if x <= r.c then
    x = r.c + 1
  end
  local list = r.r
  if #list == 0 and x == r.c + 1 then
    r.c = y
    return y - x + 1
  end
  local added = y - x + 1
  local out = {}
  local placed = false
  for i = 1, #list, 2 do
    local a, b = list[i], list[i + 1]
    if b + 1 < x then
      out[#out + 1] = a
      out[#out + 1] = b
    elseif y + 1 < a then
      if not placed then
        out[#out + 1] = x
        out[#out + 1] = y
        placed = true
      end
      out[#out + 1] = a
      out[#out + 1] = b
    else
      local lo, hi = math.max(a, x), math.min(b, y)
      if lo <= hi then
        added = added - (hi - lo + 1)
      end
      x, y = math.min(a, x), math.max(b, y)
    end
  end
  if not placed then
    out[#out + 1] = x
    out[#out + 1] = y
  end
  -- a first range that starts at c + 1 (or at 1) joins the confirmed prefix
  if out[1] == r.c + 1 then
    r.c = out[2]
    table.remove(out, 1)
    table.remove(out, 1)
  end
  r.r = out
  return added
end

-- the holes (flat list, oldest first): between c and the first range (when c > 0) and between ranges
local function rec_holes(r)
  local out = {}
  local list = r.r
  local cursor = r.c
  for i = 1, #list, 2 do
    if cursor > 0 or i > 1 then
      out[#out + 1] = cursor + 1
      out[#out + 1] = list[i] - 1
    end
    cursor = list[i + 1]
  end
  return out
end

local function rec_has_holes(r)
  return #r.r > 0 and (r.c > 0 or #r.r > 2)
end

-- keep at most REC_MAX_RANGES ranges: the oldest holes are given up (marked known); returns how many seqs
local function rec_bound(r)
  local given_up = 0
  while #r.r > 2 * REC_MAX_RANGES do
    local holes = rec_holes(r)
    given_up = given_up + rec_add_range(r, holes[1], holes[2])
  end
  return given_up
end

-- one stored (or already stored) seq at datetime ``at``; returns 1 when the record restarted (re-flash)
local function rec_add_seq(r, seq, at)
  if at < r.e and seq >= r.z then
    return 0 -- from before the restart
  end
  if r.t > 0 and seq < rec_high(r) and at > r.t then
    r.c, r.r, r.a, r.g, r.t, r.e, r.z = 0, {}, 0, 0, at, at, seq
    if seq == 1 then
      r.c = 1
    else
      r.r = {seq, seq}
    end
    return 1
  end
  if at > r.t then
    r.t = at
  end
  rec_add_range(r, seq, seq)
  return 0
end
