"""batchchat's benchmarks: throughput, latency-bound throughput, rate-limit utilisation, memory, resume, start-up.

Run them all with `make bench` (`python -m benchmarks.run_all`) or `make bench-quick` (`--quick`); the report
goes to `benchmarks/results/RESULTS.md` with PNG plots beside it. Every benchmark talks only to the
simulator on 127.0.0.1; the simulator and the client each run in their own process, pinned to different cores.
"""
