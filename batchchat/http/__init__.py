"""The HTTP stage: one attempt at one request, sent by aiohttp (default) or httpx, classified into an outcome
type, and the retry policy over attempts. `open_sender` picks the client; nothing here imports the run."""
