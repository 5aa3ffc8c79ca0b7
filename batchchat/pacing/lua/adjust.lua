-- adjust: charge ARGV[6] requests and ARGV[7] tokens (negative: a refund, never below empty).
-- As bucket.adjust_requests and bucket.adjust.
local requests = tonumber(ARGV[6])
local tokens = tonumber(ARGV[7])
if rpm ~= nil and requests ~= 0 then
  s.requests = math.max(0.0, s.requests + requests)
end
if tpm ~= nil and tokens ~= 0 then
  s.tokens = math.max(0.0, s.tokens + tokens)
end
save(key, s, rpm, tpm, now, keep)
return 1
