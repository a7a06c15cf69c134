-- EnerLink ingest: store one batch atomically (see ingest/redis_store.py for the contract).
-- ingest/seq_record.lua (the seq record's functions) is prepended to this script.
--
-- KEYS[1..15]  latest_data, latest_data_at, latest_status, latest_status_at, meters, gaps,
--              late_minutes, rejected, rejected_counts, presence, events, rate_limited,
--              confirm_due, resend_due, raw_export
-- KEYS[16..]   per item keys, in item order: data -> timeseries, late_data, seq_record, repaired;
--              status -> status_timeseries; not held -> seq_record
-- ARGV[1..10]  retention_ms, rejected_maxlen, events_maxlen, live_channel ('' = off), item count,
--              confirm_interval_ms (0 = no seq records, confirmations or gap repair), grace_ms,
--              record_ttl_ms, raw_hold_ms (0 = trim at the window whatever the raw export holds),
--              late_margin_ms (a reading of a closed minute this close to the window's start goes to
--              late_data: the next writes would soon trim it from the series, maybe before the
--              aggregator read it; late_data is dropped only once the aggregator has handled it)
-- ARGV[11..]   items; each starts with its kind:
--              'd' meter at_ms seq('' = none) late_member member(stored form) payload(JSON as received)
--                  resent('1' = from Topics.resent)
--              's' meter at_ms payload
--              'p' meter online('1'/'0') payload
--              'r' reason topic detail payload(first 1 KB)
--              'l' meter count topic detail payload(first 1 KB): count messages of one meter dropped
--                  over the rate limit, one dead letter for all of them
--              'n' meter ranges('a-b,c-d'): seqs the meter said it does not hold (a resend ack)
--              'x': nothing (an ack with nothing to record)
-- Returns one integer per item: bit 1 = newly stored (0 = already there: a redelivery),
-- 2 = went to late_data (older than the window, or near its start: late_margin_ms), 4 = flagged in
-- late_minutes, 8 = became latest, 16 = presence changed, 32 = seq seen again, 64 = repaired (newly
-- stored from Topics.resent), 128 = the seq record restarted (re-flash), 1024 * n = n sequence
-- numbers skipped; for 'n' items the number of seqs newly recorded as not held. Then: readings given
-- up by the seq records' size bound, followed by (meter, count) pairs of the meters concerned.

local K_LATEST_DATA, K_LATEST_DATA_AT, K_LATEST_STATUS, K_LATEST_STATUS_AT = 1, 2, 3, 4
local K_METERS, K_GAPS, K_LATE_MINUTES, K_REJECTED, K_REJECTED_COUNTS, K_PRESENCE, K_EVENTS =
  5, 6, 7, 8, 9, 10, 11
local K_RATE_LIMITED, K_CONFIRM_DUE, K_RESEND_DUE, K_RAW_EXPORT = 12, 13, 14, 15

local retention = tonumber(ARGV[1])
local rejected_maxlen = ARGV[2]
local events_maxlen = ARGV[3]
local live_channel = ARGV[4]
local count = tonumber(ARGV[5])
local confirm_interval = tonumber(ARGV[6])
local grace = tonumber(ARGV[7])
local record_ttl = ARGV[8]
local raw_hold = tonumber(ARGV[9])
local late_margin = tonumber(ARGV[10])

local now = redis_now_ms()
local horizon = now - retention -- older readings are late (late_data), newer ones live (timeseries)
-- While the raw export runs (its state in KEYS[K_RAW_EXPORT]), live readings it does not hold yet are
-- not trimmed, for at most raw_hold beyond the window; the keys live that much longer too.
local trim_before, ttl = horizon, retention
if raw_hold > 0 then
  local through = redis.call('HGET', KEYS[K_RAW_EXPORT], 'through')
  if through then
    trim_before = math.max(math.min(horizon, tonumber(through)), horizon - raw_hold)
    ttl = retention + raw_hold
  end
end

local results = {}
local a = 11
local k = 16
local records = {} -- meter -> {key, raw, r} (r nil: read by record_next, the parts in t, c, ks, u, us)

local function record_of(meter, key)
  local e = records[meter]
  if not e then
    local raw = redis.call('GET', key)
    e = {key = key, raw = raw, r = rec_parse(raw)}
    records[meter] = e
  elseif not e.r then -- read by record_next: the whole record now
    e.r = {t = e.t, c = e.c, r = {}, k = tonumber(e.ks), u = e.u, a = 0, g = 0, e = 0, z = 0}
  end
  return e
end

-- The usual record (nothing missing, confirmed, scheduled again) and the next seq of its meter (most
-- messages): what rec_add_seq does to it, kept as its parts (k and u as read) instead of a parsed record.
-- Returns false for anything else (the meter's record is then read by record_of).
local function record_next(meter, key, n, at)
  local raw = redis.call('GET', key)
  if raw and at >= 0 then
    local ts, cs, ks, us = string.match(raw, '^t:(%d+);c:(%d+);k:([1-9]%d*);u:([1-9]%d*)$')
    -- k and u are copied as written: digits of a positive integer below 2^53 (rec_text's own form)
    if ts and n == tonumber(cs) + 1 and #ks < 16 and #us < 16 then
      local t = tonumber(ts)
      if at > t then
        t = at
      end
      records[meter] = {key = key, raw = raw, t = t, c = n, ks = ks, u = tonumber(us), us = us}
      return true
    end
  end
  records[meter] = {key = key, raw = raw, r = rec_parse(raw)}
  return false
end
local touched_latest_data, touched_latest_status = false, false

local function newer_wins(hash, at_hash, meter, at, payload)
  local old = redis.call('HGET', KEYS[at_hash], meter)
  if (not old) or at >= tonumber(old) then
    redis.call('HSET', KEYS[hash], meter, payload)
    redis.call('HSET', KEYS[at_hash], meter, at)
    return 8
  end
  return 0
end

local function seen(meter, at)
  -- last seen: now, or a data message's own time when its clock runs ahead, and never back from a
  -- time set so (the aggregator reads a minute, the raw export an hour, for the meters seen since)
  local stored = tonumber(redis.call('HGET', KEYS[K_METERS], meter) or 0)
  local t = math.max(now, at)
  if t > stored then
    redis.call('HSET', KEYS[K_METERS], meter, t)
  end
end

local function track_seq(meter, seq, at, new)
  -- returns 32 for a sequence number seen again, 1024 * n for n sequence numbers skipped
  local raw = redis.call('HGET', KEYS[K_GAPS], meter)
  local g
  local out = 0
  if raw then
    g = cjson.decode(raw)
  else
    g = {last_seq = seq, last_at = at, missed = 0, duplicates = 0, resets = 0}
    if new then
      redis.call('HSET', KEYS[K_GAPS], meter, cjson.encode(g))
      return 0
    end
  end
  if not new then
    g.duplicates = g.duplicates + 1
    out = 32
  elseif seq > g.last_seq then
    local skipped = seq - g.last_seq - 1
    g.missed = g.missed + skipped
    g.last_seq, g.last_at = seq, at
    out = 1024 * skipped
  elseif at > g.last_at then
    -- a lower sequence number on a newer message: the device restarted its counter
    g.resets = g.resets + 1
    g.last_seq, g.last_at = seq, at
  elseif g.missed > 0 then
    -- an older message arriving late fills a gap counted before
    g.missed = g.missed - 1
  end
  redis.call('HSET', KEYS[K_GAPS], meter, cjson.encode(g))
  return out
end

for _ = 1, count do
  local kind = ARGV[a]
  if kind == 'd' then
    local meter, at, seq = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
    local late_member, member, payload, resent = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7] == '1'
    a = a + 8
    local series, late, record_key, repaired = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
    k = k + 4
    local flags = 0
    local target = series
    local minute = at - (at % 60000)
    local closed = now >= minute + 60000
    if (at < horizon or (closed and at < horizon + late_margin)) and not redis.call('ZSCORE', series, member) then
      -- older than the window, or of a closed minute near its start (a copy still in the series,
      -- held for the raw export or not trimmed yet, makes this a redelivery: it is not stored again
      -- as late data)
      target = late
      flags = flags + 2
    end
    local added = redis.call('ZADD', target, at, member)
    redis.call('PEXPIRE', target, ttl)
    if target == series then
      redis.call('ZREMRANGEBYSCORE', series, '-inf', '(' .. trim_before)
    end
    if added == 1 then
      flags = flags + 1
      if closed then
        redis.call('ZADD', KEYS[K_LATE_MINUTES], now, late_member)
        flags = flags + 4
      end
      if target == series and live_channel ~= '' then
        redis.call('PUBLISH', live_channel, payload)
      end
      if resent and seq ~= '' then
        redis.call('ZADD', repaired, at, seq)
        redis.call('PEXPIRE', repaired, ttl)
        flags = flags + 64
      end
    end
    flags = flags + newer_wins(K_LATEST_DATA, K_LATEST_DATA_AT, meter, at, payload)
    touched_latest_data = true
    if seq ~= '' then
      local n = tonumber(seq)
      flags = flags + track_seq(meter, n, at, added == 1)
      if confirm_interval > 0 and n >= 1 and n <= 9007199254740992 then
        if records[meter] or not record_next(meter, record_key, n, at) then
          flags = flags + 128 * rec_add_seq(record_of(meter, record_key).r, n, at)
        end
      end
    end
    seen(meter, at)
    results[#results + 1] = flags
  elseif kind == 's' then
    local meter, at, payload = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
    a = a + 4
    local series = KEYS[k]
    k = k + 1
    local flags = 2 -- older than the window: only a candidate for latest
    if at >= horizon then
      flags = redis.call('ZADD', series, at, payload)
      redis.call('PEXPIRE', series, retention)
      redis.call('ZREMRANGEBYSCORE', series, '-inf', '(' .. horizon)
    end
    flags = flags + newer_wins(K_LATEST_STATUS, K_LATEST_STATUS_AT, meter, at, payload)
    touched_latest_status = true
    seen(meter, now)
    results[#results + 1] = flags
  elseif kind == 'p' then
    local meter, online, payload = ARGV[a + 1], ARGV[a + 2] == '1', ARGV[a + 3]
    a = a + 4
    local flags = 0
    local raw = redis.call('HGET', KEYS[K_PRESENCE], meter)
    local was = nil
    if raw then
      was = cjson.decode(raw).online
    end
    if was ~= online then
      redis.call('HSET', KEYS[K_PRESENCE], meter, cjson.encode({online = online, since = now}))
      redis.call('XADD', KEYS[K_EVENTS], 'MAXLEN', '~', events_maxlen, '*',
        'meter_id', meter, 'kind', online and 'online' or 'offline', 'at', now, 'details', payload)
      flags = 16
    end
    results[#results + 1] = flags
  elseif kind == 'l' then
    local meter, n, topic, detail, payload = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4],
      ARGV[a + 5]
    a = a + 6
    redis.call('XADD', KEYS[K_REJECTED], 'MAXLEN', '~', rejected_maxlen, '*',
      'reason', 'rate_limited', 'topic', topic, 'received_at', now, 'payload', payload, 'detail', detail,
      'meter_id', meter, 'count', n)
    redis.call('HINCRBY', KEYS[K_REJECTED_COUNTS], 'rate_limited', n)
    redis.call('HINCRBY', KEYS[K_RATE_LIMITED], meter, n)
    results[#results + 1] = n
  elseif kind == 'x' then -- nothing to store (keeps the results aligned with the items)
    a = a + 1
    results[#results + 1] = 0
  elseif kind == 'n' then
    local meter, text = ARGV[a + 1], ARGV[a + 2]
    a = a + 3
    local key = KEYS[k]
    k = k + 1
    local lost = 0
    if confirm_interval > 0 then
      local r = record_of(meter, key).r
      local high = rec_high(r)
      for token in string.gmatch(text, '[^,]+') do
        local x, y = string.match(token, '^(%d+)%-(%d+)$')
        if not x then -- one seq ('a', as ranges_text writes it)
          x, y = token, token
        end
        x, y = tonumber(x), math.min(tonumber(y), high)
        if x <= y then
          lost = lost + rec_add_range(r, x, y)
        end
      end
    end
    results[#results + 1] = lost
  else -- 'r'
    local reason, topic, detail, payload = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    a = a + 5
    redis.call('XADD', KEYS[K_REJECTED], 'MAXLEN', '~', rejected_maxlen, '*',
      'reason', reason, 'topic', topic, 'received_at', now, 'payload', payload, 'detail', detail)
    redis.call('HINCRBY', KEYS[K_REJECTED_COUNTS], reason, 1)
    results[#results + 1] = 1
  end
end

if touched_latest_data then
  redis.call('PEXPIRE', KEYS[K_LATEST_DATA], retention)
  redis.call('PEXPIRE', KEYS[K_LATEST_DATA_AT], retention)
end
if touched_latest_status then
  redis.call('PEXPIRE', KEYS[K_LATEST_STATUS], retention)
  redis.call('PEXPIRE', KEYS[K_LATEST_STATUS_AT], retention)
end
-- the seq records: size bound, gap repair schedule, confirmation schedule, write back
local given_up, given_up_meters = 0, {}

local function record_done(meter, e)
  local r = record_of(meter, e.key).r
  local lost = rec_bound(r)
  if lost > 0 then
    given_up = given_up + lost
    given_up_meters[#given_up_meters + 1] = meter
    given_up_meters[#given_up_meters + 1] = lost
  end
  if rec_has_holes(r) then
    if redis.call('ZADD', KEYS[K_RESEND_DUE], 'NX', now + grace, meter) == 1 then
      r.g = rec_high(r) -- the holes up to here are asked for once the grace period is over
    end
  elseif r.a > 0 or r.g > 0 then
    r.a, r.g = 0, 0
    redis.call('ZREM', KEYS[K_RESEND_DUE], meter)
  end
  -- due for a confirmation: once per claim (u), again if long overdue (should the entry be gone)
  if r.u == 0 or now > r.u + confirm_interval + 60000 then
    redis.call('ZADD', KEYS[K_CONFIRM_DUE], 'NX', math.max(now, r.k + confirm_interval), meter)
    r.u = now
  end
  -- the TTL is set when the record is created and renewed when it is claimed for a confirmation (which
  -- every change leads to within an interval): a SET with KEEPTTL costs Redis about half one with PX
  local text = rec_text(r)
  if not e.raw then
    redis.call('SET', e.key, text, 'PX', record_ttl)
  elseif text ~= e.raw then
    redis.call('SET', e.key, text, 'KEEPTTL')
  end
end

-- a record read by record_next: still nothing missing, so only its schedule may change (then it is
-- done as any other); true when written here
local function record_next_done(e)
  if now > e.u + confirm_interval + 60000 then
    return false
  end
  local text = 't:' .. rec_num(e.t) .. ';c:' .. rec_num(e.c) .. ';k:' .. e.ks .. ';u:' .. e.us
  redis.call('SET', e.key, text, 'KEEPTTL') -- rec_text's usual record; c moved on, so not what was read
  return true
end

for meter, e in pairs(records) do
  if e.r or not record_next_done(e) then
    record_done(meter, e)
  end
end
results[#results + 1] = given_up
for _, v in ipairs(given_up_meters) do
  results[#results + 1] = v
end
return results
