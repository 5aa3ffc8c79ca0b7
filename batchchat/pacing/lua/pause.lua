-- pause: a cooldown of ARGV[6] seconds for every process (it only grows); the levels are left to leak and the
-- budget is primed again by the next reserve, as of the cooldown's end (no burst, no turn lost). As bucket.pause.
local seconds = tonumber(ARGV[6])
s.cool = math.max(s.cool, now + seconds)
s.started = false
save(key, s, rpm, tpm, now, keep)
return 1
