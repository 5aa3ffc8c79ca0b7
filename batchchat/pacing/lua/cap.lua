-- cap: a spending cap shared by every process. KEYS[1] = the cap's hash (fields spent, reserved, cap);
-- ARGV[1] = 'reserve' or 'settle', ARGV[2] = seconds the cap is kept after its last use.
-- reserve ARGV[3] = cap, ARGV[4] = amount: reserved += amount if spent + reserved + amount <= cap (returns 1),
-- else nothing (returns 0). settle ARGV[3] = what was reserved, ARGV[4] = what was actually spent: the
-- reservation is released (never below 0) and the actual amount counted as spent.
local f = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
local spent = tonumber(f[1]) or 0.0
local reserved = tonumber(f[2]) or 0.0
local op = ARGV[1]
local result = 1
if op == 'reserve' then
  local cap = tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'cap', ARGV[3])  -- the cap last asked for, for `batchchat status --shared`
  local amount = tonumber(ARGV[4])
  if spent + reserved + amount > cap + 1e-9 then
    result = 0
  else
    reserved = reserved + amount
  end
elseif op == 'settle' then
  reserved = reserved - tonumber(ARGV[3])
  if reserved < 1e-12 then reserved = 0.0 end  -- the float residue of settled reservations is nothing held
  spent = spent + tonumber(ARGV[4])
else
  return redis.error_reply('cap.lua: unknown operation ' .. tostring(op))
end
if result == 1 then
  redis.call('HSET', KEYS[1], 'spent', string.format('%.17g', spent), 'reserved', string.format('%.17g', reserved))
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return result
