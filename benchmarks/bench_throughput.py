"""1. Throughput ceiling: small chat requests, no limits, no latency; batchchat vs hand-written loops.

batchchat runs its full pipeline (library call: pre-scan, dispatcher, limiter on with unreachable limits,
retry policy, writer). The alternatives are `benchmarks.alternatives` loops. Each client runs alone in its
own process pinned to the client core; CPU per request is the client process's user+system time over the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import Section, log, run_client, simulator, table, write_chat_input

CONCURRENCY = 64
UNLIMITED = {"rpm": 100_000_000, "tpm": 100_000_000_000}  # the limiter's buckets exist but never wait


def sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"batchchat": 10_000, "aiohttp": 10_000, "httpx": 2_000, "openai": 2_000}
    # the slow loops run a smaller job: their rate is steady after a few hundred requests
    return {"batchchat": 50_000, "aiohttp": 50_000, "httpx": 6_000, "openai": 6_000}


def run(quick: bool, work: Path) -> Section:
    counts = sizes(quick)
    inputs = {n: write_chat_input(work / f"tp-{n}.jsonl", n) for n in set(counts.values())}
    results: dict[str, dict[str, Any]] = {}
    with simulator(seed=1) as sim:
        for client, n in counts.items():
            log(f"throughput: {client} x {n:,}")
            sim.reset_stats()
            r = run_client({"client": client, "input": str(inputs[n]), "output": str(work / f"tp-{client}.out"),
                            "base_url": sim.base_url, "concurrency": CONCURRENCY, **UNLIMITED}, timeout=600)
            r["n"] = n
            r["rps"] = r["ok"] / r["elapsed"]
            r["us"] = r["cpu"] / max(1, r["ok"] + r["failed"]) * 1e6
            r["server_requests"] = sim.stats()["requests"]
            results[client] = r
    base = results["batchchat"]
    labels = {"batchchat": "batchchat (full pipeline, writer + limiter + retries)",
              "openai": "openai `AsyncOpenAI` + Semaphore", "httpx": "httpx default transport + Semaphore",
              "aiohttp": "aiohttp + Semaphore (ceiling)"}
    rows = []
    for client in ("batchchat", "openai", "httpx", "aiohttp"):
        r = results[client]
        rows.append([labels[client], r["n"], r["ok"], r["failed"], r["rps"], r["us"],
                     f"{r['rps'] / base['rps']:.2f}x", f"{base['rps'] / r['rps']:.2f}x", r["maxrss_mb"]])
    body = (f"Zero latency, no limits, {CONCURRENCY} in flight, small chat requests "
            "(6-word prompt, max_tokens 16). Command: `python -m benchmarks.run_all --only throughput`.\n\n"
            + table(["client", "requests", "ok", "failed", "req/s", "client CPU µs/req", "req/s vs batchchat",
                     "batchchat speed-up over it", "peak RSS MB"], rows)
            + "\n\nThe hand-written loops parse each answer but do not write results, rate-limit or retry.")
    b, o, a = base["rps"], results["openai"]["rps"], results["aiohttp"]["rps"]
    goals = [
        ("batchchat ≥ 3,000 req/s on one client core", f"{b:,.0f} req/s ({base['us']:.0f} µs/req)", b >= 3000),
        ("≥ 5x the openai SDK loop", f"{b / o:.1f}x", b >= 5 * o),
        ("≥ 1/3 of aiohttp", f"{b / a:.2f} of aiohttp", b >= a / 3),
    ]
    data = {k: {kk: vv for kk, vv in v.items() if kk != "process"} for k, v in results.items()}
    return Section("1. Throughput ceiling", body, goals, data)
