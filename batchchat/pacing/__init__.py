"""Pacing: when a request may go. The request-and-token budget (`limiter`), what the server's headers say of
it (`headers`), the concurrency gate and its controller (`adaptive`), the up-front token charge (`tokens`),
and `Pacer`, which bundles them for one run and feeds every answer back to them."""
