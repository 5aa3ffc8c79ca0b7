-- reserve: one request and ARGV[6] tokens taken together if both fit and no cooldown holds (returns '0');
-- otherwise nothing is taken and it returns the seconds until they would fit. As bucket.reserve.
local tokens = tonumber(ARGV[6])
local cap_requests = 0.0
local cap_tokens = 0.0
local take = 0.0
if rpm ~= nil then
  cap_requests = capacity(rpm, burst)
end
if tpm ~= nil then
  cap_tokens = capacity(tpm, burst)
  take = math.min(tokens, cap_tokens)
end
local wait = s.cool - now
if wait < 0.0 then
  wait = 0.0
end
if not s.started then
  -- primed (at the start, or after a pause) as of the cooldown's end: this request just fits then, the rest are
  -- paced (no burst)
  s.started = true
  if rpm ~= nil then
    s.requests = math.max(s.requests, cap_requests - 1.0 + wait * (rpm / 60.0))
  end
  if tpm ~= nil then
    s.tokens = math.max(s.tokens, cap_tokens - take + wait * (tpm / 60.0))
  end
end
local lag = s.stamp - now
if lag < 0.0 then
  lag = 0.0
end
if rpm ~= nil then
  local over = s.requests + 1.0 - cap_requests
  if over > EPSILON then
    wait = math.max(wait, lag + over / (rpm / 60.0))
  end
end
if tpm ~= nil then
  local over = s.tokens + take - cap_tokens
  if over > EPSILON then
    wait = math.max(wait, lag + over / (tpm / 60.0))
  end
end
if wait <= 0.0 then
  if rpm ~= nil then
    s.requests = s.requests + 1.0
  end
  if tpm ~= nil then
    s.tokens = s.tokens + tokens
  end
  wait = 0.0
end
save(key, s, rpm, tpm, now, keep)
return fmt(wait)
