-- snapshot: the budget's levels as of now and the seconds of cooldown left; writes nothing.
return {fmt(s.requests), fmt(s.tokens), fmt(math.max(0.0, s.cool - now))}
