-- heartbeat: list a process as drawing on a budget. KEYS[1] = sorted set of process ids by last heartbeat
-- (server time), KEYS[2] = hash of process id -> what it published (JSON, written by the client);
-- ARGV[1] = process id, ARGV[2] = its JSON, ARGV[3] = seconds a silent process stays listed.
-- Processes silent for longer are dropped here and by processes.lua.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now - ttl))
for _, pid in ipairs(stale) do
  redis.call('HDEL', KEYS[2], pid)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now - ttl))
redis.call('ZADD', KEYS[1], string.format('%.17g', now), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local ms = math.ceil(ttl * 1000)
redis.call('PEXPIRE', KEYS[1], ms)
redis.call('PEXPIRE', KEYS[2], ms)
return 1
