-- EnerLink ingest: claim the meters due for a confirmation (ingest/seq_record.lua is prepended).
--
-- KEYS[1]  confirm_due (sorted set: meter -> Redis ms from when it may be confirmed)
-- ARGV     record key prefix (Keys.seq_record(meter) = prefix .. meter), most meters, claim_ms,
--          record_ttl_ms
-- Each meter due is claimed: its record's k = now (u = 0: the next change schedules it again), its TTL
-- renewed (the store script keeps it: every change leads here within an interval), its due score pushed
-- claim_ms ahead (if the worker dies before confirm_done.lua, another one confirms it then). Returns
-- now, then (meter, record text) pairs; a meter without a record (expired) leaves the set.

local prefix, limit, claim, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local now = redis_now_ms()
local out = {now}
for _, meter in ipairs(due_meters(KEYS[1], now, limit)) do
  local key = prefix .. meter
  local raw = redis.call('GET', key)
  if raw then
    local r = rec_parse(raw)
    r.k, r.u = now, 0
    local text = rec_text(r)
    redis.call('SET', key, text, 'PX', ttl)
    redis.call('ZADD', KEYS[1], 'XX', now + claim, meter)
    out[#out + 1] = meter
    out[#out + 1] = text
  else
    redis.call('ZREM', KEYS[1], meter)
  end
end
return out
