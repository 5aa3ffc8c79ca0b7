-- cap: a spending cap shared by every process. KEYS[1] = the cap's hash: per holder (a process) 's:<holder>'
-- (spent) and 'r:<holder>' (reserved for its requests in flight), 'cap' (the cap last asked for) and 'lost_at'.
-- ARGV[1] = 'reserve', 'settle' or 'restore', ARGV[2] = seconds the cap is kept after its last use,
-- ARGV[3] = the holder.
-- restore ARGV[4], ARGV[5] = what the holder itself counts as its spent and reserved: when the hash holds less
-- spent for it, or no reservation field while it holds some (Redis restarted empty, or the key expired while it
-- ran), they are put back (never lowering what the hash holds), and the hash is marked lost (`lost_at`, the server's time): until ARGV[6] seconds have passed, in which every live process puts its
-- figures back, no reservation is taken (returns 2). Returns 1.
-- reserve ARGV[4..6] as restore, then ARGV[7] = cap, ARGV[8] = amount: r:<holder> += amount if the sum over
-- every holder + amount <= cap (returns 1), else nothing (returns 0); 2 while the hash recovers from a loss.
-- settle ARGV[4] = what was reserved, ARGV[5] = what was actually spent: the reservation is released (never
-- below 0; a float residue is nothing held) and the actual amount counted as the holder's spent.
local key = KEYS[1]
local op = ARGV[1]
local s_field = 's:' .. ARGV[3]
local r_field = 'r:' .. ARGV[3]
local result = 1
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
if op == 'reserve' or op == 'restore' then
  local own_s = tonumber(ARGV[4])
  local own_r = tonumber(ARGV[5])
  local all = redis.call('HGETALL', key)
  local total = 0.0
  local s_val = 0.0
  local r_val = nil
  local lost_at = nil
  for i = 1, #all, 2 do
    local name = all[i]
    local prefix = string.sub(name, 1, 2)
    if prefix == 's:' or prefix == 'r:' then
      local value = tonumber(all[i + 1]) or 0.0
      total = total + value
      if name == s_field then s_val = value elseif name == r_field then r_val = value end
    elseif name == 'lost_at' then
      lost_at = tonumber(all[i + 1])
    end
  end
  -- spent only grows, and the store is told before the holder counts it: less here than the holder counts
  -- (beyond float drift) is a loss; so is no reservation field at all for a holder that holds some
  if s_val < own_s * (1 - 1e-6) - 1e-9 or (r_val == nil and own_r > 1e-9) then
    lost_at = now()
    local new_s = s_val + own_s  -- what was settled here since the loss, plus what the holder had: never less
    local new_r = math.max(r_val or 0.0, own_r)
    redis.call('HSET', key, s_field, string.format('%.17g', new_s), r_field, string.format('%.17g', new_r),
               'lost_at', string.format('%.17g', lost_at))
    total = total - s_val - (r_val or 0.0) + new_s + new_r
  end
  if op == 'reserve' then
    local cap = tonumber(ARGV[7])
    local amount = tonumber(ARGV[8])
    redis.call('HSET', key, 'cap', ARGV[7])
    if lost_at ~= nil and now() - lost_at < tonumber(ARGV[6]) then
      result = 2
    elseif total + amount > cap + 1e-9 then
      result = 0
    else
      redis.call('HINCRBYFLOAT', key, r_field, ARGV[8])
    end
  end
elseif op == 'settle' then
  local held = redis.call('HGET', key, r_field)
  if held then  -- no field: the hash was lost, and the holder puts its figures back (restore)
    local reserved = tonumber(held) - tonumber(ARGV[4])
    if reserved < 1e-12 then reserved = 0.0 end
    redis.call('HSET', key, r_field, string.format('%.17g', reserved))
  end
  redis.call('HINCRBYFLOAT', key, s_field, ARGV[5])
else
  return redis.error_reply('cap.lua: unknown operation ' .. tostring(op))
end
redis.call('PEXPIRE', key, math.ceil(tonumber(ARGV[2]) * 1000))
return result
