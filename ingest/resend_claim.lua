-- EnerLink ingest: claim meters due for a resend request (ingest/seq_record.lua is prepended).
--
-- KEYS[1]  resend_due (sorted set: meter -> Redis ms from when it may be asked)
-- ARGV     record key prefix, most meters, claim_ms, grace_ms, most ranges, most readings
-- For each meter due: the holes at or below its record's g (old enough), oldest first, bounded;
-- g moves to the newest seq (holes above it are asked for next time). The meter's score is pushed
-- claim_ms ahead (the cross-worker lease; the caller then sets it to now + backoff). A meter
-- without holes leaves the set; one whose holes are all too recent is due again after grace_ms.
-- Returns now, then (meter, attempt, ranges 'a-b,c-d') triples.

local prefix, limit, claim = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local grace, max_ranges, max_readings = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = redis_now_ms()
local out = {now}
for _, meter in ipairs(due_meters(KEYS[1], now, limit)) do
  local key = prefix .. meter
  local raw = redis.call('GET', key)
  local r = rec_parse(raw)
  if (not raw) or not rec_has_holes(r) then
    redis.call('ZREM', KEYS[1], meter)
    if raw and (r.a > 0 or r.g > 0) then
      r.a, r.g = 0, 0
      redis.call('SET', key, rec_text(r), 'KEEPTTL')
    end
  else
    local holes = rec_holes(r)
    local asked, readings = {}, 0
    for i = 1, #holes, 2 do
      local x, y = holes[i], math.min(holes[i + 1], r.g)
      if x > y or #asked >= 2 * max_ranges or readings >= max_readings then
        break
      end
      y = math.min(y, x + (max_readings - readings) - 1)
      asked[#asked + 1] = x
      asked[#asked + 1] = y
      readings = readings + (y - x + 1)
    end
    r.g = rec_high(r)
    if #asked == 0 then
      redis.call('ZADD', KEYS[1], 'XX', now + grace, meter)
    else
      r.a = r.a + 1
      redis.call('ZADD', KEYS[1], 'XX', now + claim, meter)
      out[#out + 1] = meter
      out[#out + 1] = r.a
      out[#out + 1] = rec_ranges_text(asked)
    end
    redis.call('SET', key, rec_text(r), 'KEEPTTL')
  end
end
return out
