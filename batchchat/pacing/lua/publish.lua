-- publish: limits learned from headers, for every process: KEYS[1] = the budget's hash,
-- ARGV[1] = rpm, ARGV[2] = tpm ('' leaves that one as it is), ARGV[3] = seconds an idle budget is kept.
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'lrpm', ARGV[1])
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'ltpm', ARGV[2])
end
local ms = math.ceil(tonumber(ARGV[3]) * 1000)
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('PEXPIRE', KEYS[1], ms)
end
return 1
