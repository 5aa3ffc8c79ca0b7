-- pause: a cooldown of ARGV[6] seconds for every process (it only grows), both buckets still full at its end so
-- traffic resumes at the paced rate, not in a burst. As bucket.pause.
local seconds = tonumber(ARGV[6])
s.cool = math.max(s.cool, now + seconds)
local remaining = s.cool - now
if remaining < 0.0 then
  remaining = 0.0
end
if rpm ~= nil then
  local full = capacity(rpm, burst) + remaining * (rpm / 60.0)
  s.requests = math.max(s.requests, full)
end
if tpm ~= nil then
  local full = capacity(tpm, burst) + remaining * (tpm / 60.0)
  s.tokens = math.max(s.tokens, full)
end
save(key, s, rpm, tpm, now, keep)
return 1
