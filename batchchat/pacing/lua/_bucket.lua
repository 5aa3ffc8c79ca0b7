-- Shared prelude of the budget scripts (prepended to each when it is loaded): the arithmetic of
-- batchchat/pacing/bucket.py, line for line, on a budget's hash. Numbers cross the wire as strings written
-- with %.17g, so a double read back is the double written.
-- Budget scripts take KEYS[1] = the budget's hash and
-- ARGV[1] = now ('' for the server's TIME), ARGV[2] = rpm, ARGV[3] = tpm ('' for unlimited),
-- ARGV[4] = burst seconds, ARGV[5] = seconds an idle budget is kept, then their own arguments.

local EPSILON = 1e-9

local function num(s)
  if s == nil or s == '' then
    return nil
  end
  return tonumber(s)
end

local function fmt(x)
  return string.format('%.17g', x)
end

local function clock(arg)
  local now = num(arg)
  if now == nil then
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return now
end

local function capacity(per_minute, burst)
  return math.max(1.0, per_minute * burst / 60.0)
end

local function load(key)
  local f = redis.call('HMGET', key, 'r', 't', 'stamp', 'cool', 'started')
  return {
    requests = tonumber(f[1]) or 0.0,
    tokens = tonumber(f[2]) or 0.0,
    stamp = tonumber(f[3]) or 0.0,
    cool = tonumber(f[4]) or 0.0,
    started = f[5] == '1',
  }
end

local function drain(s, rpm, tpm, now)
  local elapsed = now - s.stamp
  if elapsed < 0.0 then
    elapsed = 0.0
  else
    s.stamp = now
  end
  if rpm == nil then
    s.requests = 0.0
  else
    s.requests = math.max(0.0, s.requests - elapsed * (rpm / 60.0))
  end
  if tpm == nil then
    s.tokens = 0.0
  else
    s.tokens = math.max(0.0, s.tokens - elapsed * (tpm / 60.0))
  end
end

-- Write the state back; the hash lives until the budget is empty, out of cooldown, and then idle for `keep` s.
local function save(key, s, rpm, tpm, now, keep)
  redis.call('HSET', key, 'r', fmt(s.requests), 't', fmt(s.tokens), 'stamp', fmt(s.stamp),
    'cool', fmt(s.cool), 'started', s.started and '1' or '0')
  local idle = math.max(s.stamp, s.cool)
  if rpm ~= nil then
    idle = math.max(idle, s.stamp + s.requests / (rpm / 60.0))
  end
  if tpm ~= nil then
    idle = math.max(idle, s.stamp + s.tokens / (tpm / 60.0))
  end
  local ttl = math.max(0.0, idle - now) + keep
  local ms = math.ceil(ttl * 1000)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

local key = KEYS[1]
local now = clock(ARGV[1])
local rpm = num(ARGV[2])
local tpm = num(ARGV[3])
local burst = tonumber(ARGV[4])
local keep = tonumber(ARGV[5])
local s = load(key)
drain(s, rpm, tpm, now)
