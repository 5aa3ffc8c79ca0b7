"""2. Latency-bound throughput: does batchchat keep the pipe full when every answer takes a while?

(a) 200-2,000 ms uniform latency with 1,000+ in flight: the best any client can do is concurrency / mean
latency. (b) 50 ms latency at 256, 1,000 and 4,000 in flight. aiohttp's hand-written loop runs beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import Section, log, run_client, simulator, table, write_chat_input

UNLIMITED = {"rpm": 100_000_000, "tpm": 100_000_000_000}


def _one(client: str, sim: Any, inp: Path, out: Path, c: int) -> dict[str, Any]:
    sim.reset_stats()
    r = run_client({"client": client, "input": str(inp), "output": str(out), "base_url": sim.base_url,
                    "concurrency": c, **UNLIMITED}, timeout=600)
    r["rps"] = r["ok"] / r["elapsed"]
    stats = sim.stats()
    r["max_in_flight"] = stats.get("max_in_flight")
    series = [row["requests"] for row in stats["series"]]
    # without the ramp-up and the last answers' tail (short runs: the first and last, partial, seconds)
    steady = series[2:-3] if len(series) > 8 else series[1:-1] if len(series) > 3 else series
    r["steady_rps"] = sum(steady) / max(1, len(steady))
    return r


def run(quick: bool, work: Path) -> Section:
    n_long = 3_000 if quick else 20_000
    c_long = 1_000 if quick else 2_000
    n_short = 3_000 if quick else 40_000  # 10 requests per connection at 4,000 in flight: opening them is not all
    results: dict[str, Any] = {"long": {}, "short": {}}
    inp_long = write_chat_input(work / "lat-long.jsonl", n_long)
    inp_short = write_chat_input(work / "lat-short.jsonl", n_short)
    with simulator(seed=2, latency_ms=200, latency_max_ms=2000) as sim:
        for client in ("batchchat", "aiohttp"):
            log(f"latency 200-2000 ms: {client} x {n_long:,} at {c_long:,} in flight")
            results["long"][client] = _one(client, sim, inp_long, work / f"lat-long-{client}.out", c_long)
    with simulator(seed=3, latency_ms=50) as sim:
        for c in (256, 1000, 4000):
            for client in ("batchchat", "aiohttp"):
                log(f"latency 50 ms: {client} x {n_short:,} at {c:,} in flight")
                results["short"][f"{client}@{c}"] = _one(client, sim, inp_short, work / f"lat-s-{client}-{c}.out", c)
    ideal_long = c_long / 1.1
    rows = []
    for client, r in results["long"].items():
        rows.append([client, n_long, c_long, r["ok"], r["rps"], r["steady_rps"], ideal_long,
                     f"{r['steady_rps'] / ideal_long:.0%}", r["max_in_flight"], r["cpu"] / n_long * 1e6])
    body = (f"(a) latency uniform 200-2,000 ms (mean 1.1 s), {n_long:,} requests, {c_long:,} in flight; "
            "ideal = concurrency / mean latency. req/s is over the whole run (ramp-up and the last answers' tail "
            "included); steady req/s is the server's per-second count without the first 2 s and the last 3 s "
            "(runs under 9 s: without the first and the last second).\n\n"
            + table(["client", "requests", "concurrency", "ok", "req/s", "steady req/s", "ideal req/s",
                     "pipe filled (steady)",
                     "server max in flight", "client CPU µs/req"], rows))
    rows = []
    for c in (256, 1000, 4000):
        b, a = results["short"][f"batchchat@{c}"], results["short"][f"aiohttp@{c}"]
        rows.append([c, min(c / 0.05, 1e9), b["rps"], b["steady_rps"], b["cpu"] / n_short * 1e6, b["max_in_flight"],
                     a["rps"], a["steady_rps"], f"{b['rps'] / a['rps']:.2f}"])
    body += (f"\n\n(b) 50 ms latency, {n_short:,} requests per run. req/s is over the whole run, opening every "
             "connection included (4,000 of them at 4,000 in flight); steady req/s as in (a).\n\n"
             + table(["in flight", "ideal req/s", "batchchat req/s", "batchchat steady req/s", "batchchat CPU µs/req",
                      "server max in flight", "aiohttp req/s", "aiohttp steady req/s", "batchchat / aiohttp"], rows)
             + "\n\nCommand: `python -m benchmarks.run_all --only latency`.")
    long_b = results["long"]["batchchat"]["steady_rps"]
    s1000 = results["short"]["batchchat@1000"]["rps"]
    s256, m1000, s4000 = (results["short"][f"batchchat@{c}"]["steady_rps"] for c in (256, 1000, 4000))
    goals = [
        (f"200-2,000 ms x {c_long:,} in flight keeps the pipe full (≥ 90% of ideal)",
         f"{long_b:,.0f} req/s = {long_b / ideal_long:.0%} of {ideal_long:,.0f}", long_b >= 0.9 * ideal_long),
        ("50 ms x 1,000 in flight ≥ 2,000 req/s", f"{s1000:,.0f} req/s", s1000 >= 2000),
        ("no drop from 256 to 4,000 in flight (within 5%, steady)",
         f"{s256:,.0f} -> {m1000:,.0f} -> {s4000:,.0f} req/s", s4000 >= 0.95 * s256 and m1000 >= 0.95 * s256),
    ]
    data = {k: {kk: {x: y for x, y in vv.items() if x != "process"} for kk, vv in v.items()}
            for k, v in results.items()}
    return Section("2. Latency-bound throughput", body, goals, data)
