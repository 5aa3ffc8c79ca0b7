"""Pacing: when a request may go. The request-and-token budget per model (`budget`, on the arithmetic of
`bucket` and a `store` that holds its state, in process or in Redis), what the server's headers say of it
(`headers`), the concurrency gate and its controller (`adaptive`), the up-front token charge (`tokens`), and
`Pacer`, which bundles them for one run and feeds every answer back to them."""
