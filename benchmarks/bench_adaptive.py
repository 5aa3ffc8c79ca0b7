"""7. Limits that tune themselves: auto limits, a shared key, a server without headers, and `batchchat tune`.

Every client is the real CLI in its own process pinned to the client core; the simulator runs pinned to the
server core. Figures come from the simulator's own per-second series, so they are what the server saw.
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path
from typing import Any

from benchmarks.common import (
    API_KEY,
    MODEL,
    PYTHON,
    Section,
    log,
    run_process,
    simulator,
    table,
    write_chat_input,
)


def _run_cli(inp: Path, out: Path, base_url: str, *flags: str, timeout: float) -> dict[str, Any]:
    summary = out.with_suffix(".summary.json")
    cmd = [PYTHON, "-m", "batchchat", "run", str(inp), "-o", str(out), "--base-url", base_url, "--progress", "off",
           "--summary-json", str(summary), *flags]
    run = run_process(cmd, timeout=timeout, env={"OPENAI_API_KEY": API_KEY})
    if run.returncode not in (0, 1):
        raise RuntimeError(f"batchchat exited {run.returncode}: {run.stderr[-2000:]}")
    data = json.loads(summary.read_text())
    data["wall"] = run.wall
    return data


def _steady(series: list[dict[str, Any]], skip: int, tail: int = 2) -> tuple[float, float, int]:
    """(requests/s, tokens/s, seconds) over the series from `skip` seconds to `tail` before the end."""
    part = series[skip:len(series) - tail] if len(series) > skip + tail + 2 else series
    secs = max(1, len(part))
    return sum(s["requests"] for s in part) / secs, sum(s["tokens"] for s in part) / secs, secs


def auto_limits(quick: bool, work: Path) -> dict[str, Any]:
    """The client is given no limits; the simulator enforces 6,000 RPM with 200-2,000 ms latency."""
    rpm, warmup, seconds = 6_000, (5 if quick else 30), (20 if quick else 55)
    n = int(rpm / 60 * seconds)
    inp = write_chat_input(work / "auto.jsonl", n)
    with simulator(seed=5, rpm=rpm, tpm=50_000_000, latency_ms=200, latency_max_ms=2000) as sim:
        log(f"adaptive: auto limits, {n:,} requests against {rpm:,} RPM the client is not told")
        client = _run_cli(inp, work / "auto.out", sim.base_url, "--concurrency", "1024", timeout=seconds * 4 + 60)
        stats = sim.stats()
    per_s, _tokens, secs = _steady(stats["series"], warmup)
    return {"n": n, "rpm": rpm, "steady_pct": per_s * 60 / rpm, "steady_seconds": secs,
            "n429": stats["rate_limited"], "pct429": stats["rate_limited"] / max(1, stats["requests"]),
            "ok": client["succeeded"], "failed": client["failed"], "warmup": warmup}


def shared_key(quick: bool, work: Path) -> dict[str, Any]:
    """Two processes on one key against one simulator, each told the key's limit (as two cron jobs would be)."""
    rpm, seconds = 6_000, (15 if quick else 30)
    n = int(rpm / 60 * seconds / 2)
    inputs = [write_chat_input(work / f"shared-{i}.jsonl", n) for i in range(2)]
    with simulator(seed=6, rpm=rpm, tpm=50_000_000, latency_ms=100, latency_max_ms=400) as sim:
        log(f"adaptive: shared key, 2 x {n:,} requests at {rpm:,} RPM")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(_run_cli, inp, work / f"shared-{i}.out", sim.base_url, "--rpm", str(rpm),
                                   "--concurrency", "512", timeout=seconds * 4 + 60)
                       for i, inp in enumerate(inputs)]
            clients = [f.result() for f in futures]
        stats = sim.stats()
    per_s, _tokens, _secs = _steady(stats["series"], 3)
    return {"n": 2 * n, "rpm": rpm, "steady_pct": per_s * 60 / rpm, "n429": stats["rate_limited"],
            "pct429": stats["rate_limited"] / max(1, stats["requests"]),
            "ok": sum(c["succeeded"] for c in clients), "failed": sum(c["failed"] for c in clients)}


def no_headers(quick: bool, work: Path) -> dict[str, Any]:
    """A self-hosted-like server: no headers, queues past 64 in flight, 503s past 256; fixed sweep vs adaptive."""
    config = {"seed": 7, "capacity": 64, "overload_at": 256, "latency_ms": 50, "rate_limit_headers": False}
    n = 4_000 if quick else 10_000
    levels = (32, 64, 128, 256) if not quick else (64, 256)
    inp = write_chat_input(work / "nohdr.jsonl", n)
    fixed: dict[int, dict[str, Any]] = {}
    with simulator(**config) as sim:
        for level in levels:
            sim.reset_stats()
            log(f"adaptive: no headers, fixed concurrency {level}")
            client = _run_cli(inp, work / f"nohdr-{level}.out", sim.base_url, "--concurrency", str(level),
                              "--adapt", "off", "--max-attempts", "8", "--backoff-base", "0.05", timeout=600)
            stats = sim.stats()
            fixed[level] = {"rps": client["succeeded"] / client["wall_seconds"], "failed": client["failed"],
                            "errors_pct": stats["responses"].get("503", 0) / max(1, stats["requests"])}
            (work / f"nohdr-{level}.out").unlink()
        sim.reset_stats()
        log("adaptive: no headers, adaptive (up to 2,048 in flight)")
        client = _run_cli(inp, work / "nohdr-adaptive.out", sim.base_url, "--concurrency", "2048",
                          "--max-attempts", "8", "--backoff-base", "0.05", timeout=600)
        stats = sim.stats()
    best_level = max(fixed, key=lambda c: fixed[c]["rps"] if fixed[c]["failed"] == 0 else 0.0)
    adaptive = {"rps": client["succeeded"] / client["wall_seconds"], "failed": client["failed"],
                "errors_pct": stats["responses"].get("503", 0) / max(1, stats["requests"]),
                "max_in_flight": stats["max_in_flight"]}
    return {"n": n, "fixed": fixed, "best_level": best_level, "adaptive": adaptive,
            "ratio": adaptive["rps"] / fixed[best_level]["rps"]}


def tune_holds(quick: bool, work: Path) -> dict[str, Any]:
    """`batchchat tune` against a server with a silent 3,000 RPM limit; then the job with its flags."""
    sample = write_chat_input(work / "tune-sample.jsonl", 50)
    n = 1_500 if quick else 3_000
    job = write_chat_input(work / "tune-job.jsonl", n)
    with simulator(seed=8, rpm=3_000, latency_ms=30, rate_limit_headers=False) as sim:
        log("adaptive: tune sweep against a silent 3,000 RPM limit")
        plot, report = work / "tune.png", work / "tune.json"
        run = run_process([PYTHON, "-m", "batchchat", "tune", str(sample), "--base-url", sim.base_url,
                           "--model", MODEL, "--levels", "1,2,4,8,16", "--per-step", "150", "--pause", "1.5",
                           "--plot", str(plot), "--json", str(report)], timeout=600,
                          env={"OPENAI_API_KEY": API_KEY})
        if run.returncode != 0:
            raise RuntimeError(f"tune exited {run.returncode}: {run.stderr[-2000:]}")
        advice = json.loads(report.read_text())["recommendation"]
        flags = ["--concurrency", str(advice["concurrency"]), "--adapt", "off"]
        if advice["rpm"]:
            flags += ["--rpm", str(advice["rpm"])]
        sim.reset_stats()
        log(f"adaptive: job with tune's flags {' '.join(flags)}")
        client = _run_cli(job, work / "tune-job.out", sim.base_url, *flags, timeout=600)
        stats = sim.stats()
    return {"advice": advice["flags"], "n": n, "ok": client["succeeded"], "n429": stats["rate_limited"],
            "pct429": stats["rate_limited"] / max(1, stats["requests"]),
            "rpm_pct": (client["succeeded"] / client["wall_seconds"]) * 60 / 3_000}


def run(quick: bool, work: Path) -> Section:
    """All four, one after the other (each needs the machine to itself)."""
    auto = auto_limits(quick, work)
    shared = shared_key(quick, work)
    nohdr = no_headers(quick, work)
    tuned = tune_holds(quick, work)
    fixed_rows = [[f"fixed {c}", f"{v['rps']:,.0f}", f"{v['errors_pct']:.2%}", v["failed"]]
                  for c, v in nohdr["fixed"].items()]
    a = nohdr["adaptive"]
    body = "\n\n".join([
        f"**Auto limits.** {auto['n']:,} requests; the simulator enforces {auto['rpm']:,} RPM with 200-2,000 ms "
        f"latency, batchchat is given no limit (`--concurrency 1024`). After a {auto['warmup']} s warm-up it "
        f"ran at {auto['steady_pct']:.1%} of the limit over {auto['steady_seconds']} s, with {auto['n429']} "
        f"429s ({auto['pct429']:.2%}); {auto['ok']:,} succeeded, {auto['failed']} failed.",
        f"**Shared key.** Two batchchat processes on one key, each told `--rpm {shared['rpm']}`, against one "
        f"simulator enforcing it: together {shared['steady_pct']:.1%} of the limit, {shared['n429']} 429s "
        f"({shared['pct429']:.2%}); {shared['ok']:,} of {shared['n']:,} succeeded.",
        f"**A server without headers** (queues past 64 in flight, 503 past 256, 50 ms base latency), "
        f"{nohdr['n']:,} requests:",
        table(["client", "req/s", "503s / requests", "failed"],
              [*fixed_rows, ["adaptive (`--concurrency 2048`)", f"{a['rps']:,.0f}", f"{a['errors_pct']:.2%}",
                             a["failed"]]]),
        f"Adaptive reached {nohdr['ratio']:.0%} of the best fixed level ({nohdr['best_level']}).",
        f"**tune.** Against a silent 3,000 RPM limit it recommended `{tuned['advice']}`; the {tuned['n']:,}-request "
        f"job with those flags got {tuned['n429']} 429s ({tuned['pct429']:.2%}) and ran at "
        f"{tuned['rpm_pct']:.0%} of the limit.",
    ])
    goals = [
        ("auto limits: ≥ 95% of the binding limit after the warm-up", f"{auto['steady_pct']:.1%}",
         auto["steady_pct"] >= 0.95),
        ("auto limits: 429s < 1%", f"{auto['pct429']:.2%}", auto["pct429"] < 0.01),
        ("shared key: together ≥ 90% of the limit", f"{shared['steady_pct']:.1%}", shared["steady_pct"] >= 0.90),
        ("shared key: 429s < 2%", f"{shared['pct429']:.2%}", shared["pct429"] < 0.02),
        ("no headers: ≥ 90% of the best fixed concurrency", f"{nohdr['ratio']:.0%}", nohdr["ratio"] >= 0.90),
        ("no headers: errors < 1%", f"{a['errors_pct']:.2%} 503s, {a['failed']} failed",
         a["errors_pct"] < 0.01 and a["failed"] == 0),
        ("tune: its flags hold under 1% 429s", f"{tuned['pct429']:.2%}", tuned["pct429"] < 0.01),
    ]
    return Section("7. Limits that tune themselves", body, goals,
                   {"auto": auto, "shared": shared, "no_headers": nohdr, "tune": tuned})
