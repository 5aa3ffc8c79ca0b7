-- heartbeat: list a process as drawing on a budget. KEYS[1] = sorted set of process ids by last heartbeat
-- (server time), KEYS[2] = hash of process id -> what it published (JSON, written by the client);
-- ARGV[1] = now ('' for the server's TIME), ARGV[2] = process id, ARGV[3] = its JSON,
-- ARGV[4] = seconds a silent process stays listed. Processes silent for longer are dropped here.
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local ttl = tonumber(ARGV[4])
local oldest = '(' .. string.format('%.17g', now - ttl)
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', oldest)
for _, pid in ipairs(stale) do
  redis.call('HDEL', KEYS[2], pid)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', oldest)
redis.call('ZADD', KEYS[1], string.format('%.17g', now), ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local ms = math.ceil(ttl * 1000)
redis.call('PEXPIRE', KEYS[1], ms)
redis.call('PEXPIRE', KEYS[2], ms)
return 1
