-- EnerLink ingest: after confirmations were published (ingest/seq_record.lua is prepended).
--
-- KEYS[1]  confirm_due
-- ARGV     record key prefix, interval_ms, claimed_at (Redis ms), then (meter, record text) pairs
-- A meter whose record is still what was confirmed leaves the set; one that changed meanwhile is
-- due again one interval after the claim. Returns how many meters left the set.

local prefix, interval, claimed = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local done = 0
for i = 4, #ARGV, 2 do
  local meter, text = ARGV[i], ARGV[i + 1]
  local raw = redis.call('GET', prefix .. meter)
  if raw == text or not raw then
    redis.call('ZREM', KEYS[1], meter)
    done = done + 1
  else
    redis.call('ZADD', KEYS[1], 'XX', claimed + interval, meter)
  end
end
return done
