"""The online path: one task group owns a run; reader -> dispatcher -> workers -> writer.

Concurrency model, chosen on purpose: **asyncio is the runtime** (aiohttp, the default sender, and uvloop
are asyncio-only, so anyio's trio backend could never run a job), and **anyio is the structure over it**:
task groups, cancel scopes (shielded hand-over of paid results, grace periods), memory streams between
stages, signal receivers and worker threads for blocking file work. The two asyncio-only primitives that
remain (the worker pool's queue and the concurrency gate's futures) were measured faster on the hot path
(a queue hand-off ~1.4 µs against ~20 µs for an anyio task per request) and live inside one module each.

Modules: `engine` (prepare, execute, finish), `dispatch` (admit lines through pacing), `attempts` (send one
request with retries, build its result), `workers` (the pool), `write_stage` (the only writer of the output),
`stop` (stop reasons, grace, signals), `collector` (garbage-collector tuning, for the CLI's process only).
"""
