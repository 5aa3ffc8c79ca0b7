-- processes: the processes heard from within ARGV[2] seconds of now (ARGV[1], '' for the server's TIME), as a
-- flat list of process id, seconds since its last heartbeat, its JSON. KEYS as heartbeat.lua. Writes nothing.
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local ttl = tonumber(ARGV[2])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.17g', now - ttl), '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  local blob = redis.call('HGET', KEYS[2], live[i])
  if blob then
    out[#out + 1] = live[i]
    out[#out + 1] = string.format('%.17g', math.max(0.0, now - tonumber(live[i + 1])))
    out[#out + 1] = blob
  end
end
return out
