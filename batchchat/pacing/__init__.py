"""Pacing: when a request may go. The request-and-token budget's arithmetic (`bucket`) and where its state
lives (`store`: in process; `redis_store`: shared by every process on a key), what the server's headers say
(`headers`), the concurrency gate and its controller (`adaptive`), the up-front token charge (`tokens`), and
`Pacer`, which bundles them for one run and feeds every answer back to them."""
