"""9. Pacing on every kind of server: small limits and strict windows in the default mode beside `--adapt off`,
two models with tenfold different limits, a strict one-second window, a gateway's calendar-minute counter, and a
single queueing worker without headers.

Every client is the real CLI in auto mode (no limits given) in its own process pinned to the client core; the
simulator runs pinned to the server core. Rates come from the simulator's own per-second series (per model
where it matters), so they are what the server saw.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench_adaptive import _run_cli, _steady
from benchmarks.common import Section, chat_body, log, simulator, table, write_chat_input

LATENCY = {"latency_ms": 200, "latency_max_ms": 2000}
BIG, SMALL = "gpt-4o-mini", "gpt-4o"


def _mixed_input(path: Path, n_big: int, n_small: int) -> Path:
    """`n_big` lines for BIG and `n_small` for SMALL, shuffled together (seeded)."""
    models = [BIG] * n_big + [SMALL] * n_small
    random.Random(11).shuffle(models)
    with path.open("wb") as out:
        for i, model in enumerate(models):
            body = chat_body(i) | {"model": model}
            out.write(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                    "body": body}, option=orjson.OPT_APPEND_NEWLINE))
    return path


def mixed(quick: bool, work: Path) -> dict[str, Any]:
    """Two models, 6,000 and 600 RPM, interleaved at the ratio of their limits; the client is told nothing.

    Full mode runs three minutes of work, as the utilisation benchmark does: a run's fixed costs (process start,
    each model's first request alone, the last answers' latency of up to 2 s) are then a few percent of it."""
    big_rpm, small_rpm, seconds = 6_000, 600, (25 if quick else 180)
    n_big, n_small = big_rpm * seconds // 60, small_rpm * seconds // 60
    inp = _mixed_input(work / "mixed.jsonl", n_big, n_small)
    limits = {BIG: (big_rpm, 50_000_000), SMALL: (small_rpm, 5_000_000)}
    with simulator(seed=12, model_limits=limits, **LATENCY) as sim:
        log(f"pacing: mixed models, {n_big:,} + {n_small:,} requests at {big_rpm:,} / {small_rpm:,} RPM")
        client = _run_cli(inp, work / "mixed.out", sim.base_url, "--concurrency", "1024",
                          timeout=seconds * 4 + 60)
        stats = sim.stats()
    models = stats["models"]
    out: dict[str, Any] = {"n": n_big + n_small, "ok": client["succeeded"], "failed": client["failed"],
                           "n429": stats["rate_limited"], "pct429": stats["rate_limited"] / max(1, stats["requests"]),
                           "wall": client["wall_seconds"], "ideal": max(n_big / big_rpm, n_small / small_rpm) * 60}
    for model, rpm in ((BIG, big_rpm), (SMALL, small_rpm)):
        per_s, _t, secs = _steady(models[model]["series"], 5, 3)
        out[model] = {"rpm": rpm, "steady_pct": per_s * 60 / rpm, "seconds": secs,
                      "n429": models[model]["rate_limited"]}
    out["wall_over_ideal"] = out["wall"] / out["ideal"]
    admitting = [i for i, s in enumerate(stats["series"]) if s["requests"]]
    out["span"] = admitting[-1] - admitting[0] + 1  # whole seconds from the first admission to the last
    out["span_over_ideal"] = out["span"] / out["ideal"]
    return out


def strict(quick: bool, work: Path) -> dict[str, Any]:
    """One process against a server admitting at most a second's worth of 6,000 RPM in each whole second."""
    rpm, seconds = 6_000, (25 if quick else 50)
    n = rpm * seconds // 60
    inp = write_chat_input(work / "strict.jsonl", n)
    with simulator(seed=13, rpm=rpm, tpm=50_000_000, limit_kind="strict", **LATENCY) as sim:
        log(f"pacing: strict window, {n:,} requests at {rpm:,} RPM")
        client = _run_cli(inp, work / "strict.out", sim.base_url, "--concurrency", "1024", timeout=seconds * 4 + 60)
        stats = sim.stats()
    per_s, _t, secs = _steady(stats["series"], 5, 3)
    series = stats["series"]
    half = len(series) // 2
    return {"n": n, "rpm": rpm, "steady_pct": per_s * 60 / rpm, "seconds": secs, "ok": client["succeeded"],
            "failed": client["failed"], "n429": stats["rate_limited"],
            "pct429": stats["rate_limited"] / max(1, stats["requests"]),
            "n429_second_half": sum(s["429"] for s in series[half:])}


def minute_gateway(quick: bool, work: Path) -> dict[str, Any]:
    """A LiteLLM-like gateway: 1,200 requests per calendar minute, `remaining` with no reset, its 429s carrying
    only `llm_provider-retry-after`."""
    rpm, seconds = 1_200, (75 if quick else 150)
    n = rpm * seconds // 60
    inp = write_chat_input(work / "minute.jsonl", n)
    with simulator(seed=14, rpm=rpm, limit_kind="minute", retry_after_style="litellm", latency_ms=50,
                   latency_max_ms=300) as sim:
        log(f"pacing: calendar-minute gateway, {n:,} requests at {rpm:,} RPM")
        client = _run_cli(inp, work / "minute.out", sim.base_url, "--concurrency", "256", timeout=seconds * 4 + 120)
        stats = sim.stats()
    series = stats["series"]
    first = next(i for i, s in enumerate(series) if s["requests"])
    last = max(i for i, s in enumerate(series) if s["requests"])
    rate = sum(s["requests"] for s in series) / max(1, last - first + 1)
    return {"n": n, "rpm": rpm, "pct": rate * 60 / rpm, "ok": client["succeeded"], "failed": client["failed"],
            "n429": stats["rate_limited"], "wall": client["wall_seconds"]}


# Default mode (auto, told nothing) beside --adapt off given the limits, on the server OpenAI's shape describes
# (the simulator's default: headers from a per-minute bucket, admission per second), 300 ms + 5 ms a token.
LIMIT_CASES = {
    # name: simulator limits and kind, lines (full, quick), prompt words, max_tokens
    "small limits: 300 RPM / 15,000 TPM, bucket with a 1 s burst": (
        {"rpm": 300, "tpm": 15_000}, (120, 60), 20, 150),
    "strict 1 s windows: 3,000 RPM / 150,000 TPM": (
        {"rpm": 3_000, "tpm": 150_000, "limit_kind": "strict"}, (2_400, 1_200), 6, 16),
}


def limit_cases(quick: bool, work: Path) -> dict[str, Any]:
    """Each case twice against one simulator: the default mode, then `--adapt off` with the limits."""
    results: dict[str, Any] = {}
    for name, (limits, (full, short), words, max_tokens) in LIMIT_CASES.items():
        n = short if quick else full
        inp = write_chat_input(work / "limits.jsonl", n, words=words, max_tokens=max_tokens)
        rows = {}
        with simulator(seed=16, latency_ms=300, ms_per_token=5, **limits) as sim:
            for mode, flags in (("default", []), ("--adapt off", ["--adapt", "off", "--rpm", str(limits["rpm"]),
                                                                  "--tpm", str(limits["tpm"])])):
                sim.reset_stats()
                log(f"pacing: {name}, {mode}, {n:,} lines")
                out = work / "limits.out"
                client = _run_cli(inp, out, sim.base_url, "--concurrency", "512", *flags, timeout=n + 300)
                out.unlink()
                stats = sim.stats()
                series = stats["series"]
                active = [i for i, row in enumerate(series) if row["requests"]]
                part = series[active[0]:active[-1]] if len(active) > 2 else series  # first to last admission
                secs = max(1, len(part))
                rpm = sum(row["requests"] for row in part) / secs * 60
                tpm = sum(row["tokens"] for row in part) / secs * 60
                ideal = max(stats["requests"] / limits["rpm"], stats["tokens_admitted"] / limits["tpm"]) * 60
                n429 = stats["rate_limited"]
                rows[mode] = {"binding_pct": max(rpm / limits["rpm"], tpm / limits["tpm"]),
                              "n429": n429, "pct429": n429 / max(1, stats["requests"]),
                              "wall": client["wall_seconds"], "ideal": ideal, "failed": client["failed"]}
        results[name] = {"n": n, **rows}
    return results


KNEE_SLACK = 0.03  # the knee: the lowest fixed concurrency within this much of the highest fixed throughput


def _steady_in_flight(out: Path, rps: float) -> float:
    """Requests in flight over the second half of a run, by Little's law: req/s x mean latency of the second
    half of the answers (the output is written in the order answers come back)."""
    latencies = [orjson.loads(line)["latency_ms"] for line in out.read_bytes().splitlines() if line]
    half = latencies[len(latencies) // 2:]
    return rps * sum(half) / max(1, len(half)) / 1000.0


def knee(fixed: dict[str, dict[str, Any]]) -> str:
    """The lowest fixed concurrency whose throughput is within `KNEE_SLACK` of the highest: all the throughput
    at the least queueing (`fixed` in rising order of concurrency)."""
    top = max(v["rps"] for v in fixed.values())
    return next(k for k, v in fixed.items() if v["rps"] >= top * (1.0 - KNEE_SLACK))


def queueing_worker(quick: bool, work: Path) -> dict[str, Any]:
    """One FIFO worker, no rate-limit headers: fixed concurrencies (`--adapt off`) against auto mode, judged
    against the knee (`knee`), not the fastest fixed level (which may only add queueing)."""
    n = 2_000 if quick else 4_000
    levels = (2, 4, 8, 16, 64) if not quick else (4, 8, 64)
    inp = write_chat_input(work / "queue.jsonl", n)
    results: dict[str, dict[str, Any]] = {}
    with simulator(seed=15, workers=1, latency_ms=6, rate_limit_headers=False) as sim:
        for label, flags in [*((f"fixed {c}", ["--concurrency", str(c), "--adapt", "off"]) for c in levels),
                             ("auto (`--concurrency 64`)", ["--concurrency", "64"])]:
            sim.reset_stats()
            log(f"pacing: single queueing worker, {label}")
            out = work / "queue.out"
            client = _run_cli(inp, out, sim.base_url, *flags, timeout=600)
            rps = client["succeeded"] / client["wall_seconds"]
            results[label] = {"rps": rps, "p50": client["latency_ms_p50"], "failed": client["failed"],
                              "max_in_flight": sim.stats()["max_in_flight"],
                              "steady_in_flight": _steady_in_flight(out, rps)}
            out.unlink()
    fixed = {k: v for k, v in results.items() if k.startswith("fixed")}
    best = knee(fixed)
    auto = results["auto (`--concurrency 64`)"]
    return {"n": n, "results": results, "best": best, "ratio": auto["rps"] / fixed[best]["rps"],
            "p50_ratio": auto["p50"] / max(1e-9, fixed[best]["p50"])}


def run(quick: bool, work: Path) -> Section:
    """All five, one after the other (each needs the machine to itself)."""
    cases = limit_cases(quick, work)
    mix = mixed(quick, work)
    win = strict(quick, work)
    minute = minute_gateway(quick, work)
    queue = queueing_worker(quick, work)
    big, small = mix[BIG], mix[SMALL]
    case_rows = [[name, c["n"], mode, f"{r['binding_pct']:.1%}", f"{r['n429']} ({r['pct429']:.2%})",
                  f"{r['wall']:.1f}", f"{r['ideal']:.1f}", f"{r['wall'] / r['ideal']:.2f}x", r["failed"]]
                 for name, c in cases.items() for mode, r in c.items() if mode != "n"]
    body = "\n\n".join([
        "**Small limits and strict windows, default mode beside `--adapt off`** (the simulator's default headers: "
        "OpenAI's shape, a per-minute bucket refilled continuously while admission is per second; 300 ms + 5 ms a "
        "token; the default mode is told nothing, `--adapt off` is given the limits; % of the binding limit from "
        "the first admission to the last, as the server counted):",
        table(["case", "lines", "mode", "binding limit used", "429s", "wall s", "ideal s", "wall / ideal",
               "failed"], case_rows),
        f"**Mixed models.** One file of {mix['n']:,} lines, {BIG} ({big['rpm']:,} RPM) and {SMALL} "
        f"({small['rpm']:,} RPM) shuffled together in the ratio of their limits, 200-2,000 ms latency, "
        f"batchchat told no limit: {BIG} at {big['steady_pct']:.1%} and {SMALL} at {small['steady_pct']:.1%} "
        f"of their own limits over the steady part; {mix['n429']} 429s ({mix['pct429']:.2%}); wall "
        f"{mix['wall']:.1f} s against an ideal of {mix['ideal']:.1f} s ({mix['wall_over_ideal']:.1%}; the wall "
        f"includes process start, each model's first request alone and the last answers' latency: the server "
        f"admitted requests over {mix['span']} whole seconds, {mix['span_over_ideal']:.1%} of the ideal); "
        f"{mix['ok']:,} succeeded, {mix['failed']} failed.",
        f"**Strict window.** {win['n']:,} requests against {win['rpm']:,} RPM enforced as at most 100 per whole "
        f"second (`--limit-kind strict`), 200-2,000 ms latency: {win['steady_pct']:.1%} of the limit over "
        f"{win['seconds']} s, {win['n429']} 429s ({win['pct429']:.2%}; {win['n429_second_half']} in the second "
        f"half of the run); {win['ok']:,} succeeded, {win['failed']} failed.",
        f"**Calendar-minute gateway** (LiteLLM-like: `remaining` per calendar minute, no reset, "
        f"`llm_provider-retry-after`), {minute['rpm']:,} RPM, {minute['n']:,} requests: {minute['pct']:.1%} of "
        f"the limit from first to last admission, {minute['n429']} 429s, {minute['ok']:,} succeeded, "
        f"{minute['failed']} given up.",
        f"**A single queueing worker** without headers (one FIFO worker, 6 ms a request), {queue['n']:,} "
        "requests:",
        table(["client", "req/s", "p50 ms", "in flight, 2nd half", "max in flight", "failed"],
              [[k, f"{v['rps']:,.0f}", f"{v['p50']:,.0f}", f"{v['steady_in_flight']:.1f}", v["max_in_flight"],
                v["failed"]] for k, v in queue["results"].items()]),
        f"The best fixed concurrency is the knee: the lowest whose throughput is within {KNEE_SLACK:.0%} of the "
        f"highest fixed throughput ({queue['best']}; more in flight only queues at the worker). Auto mode "
        f"reached {queue['ratio']:.0%} of its throughput at {queue['p50_ratio']:.1f}x its p50. `in flight, 2nd "
        "half` is Little's law over the second half of the answers (req/s x their mean latency).",
    ])
    goals = []
    for name, c in cases.items():
        d, off = c["default"], c["--adapt off"]
        goals += [
            (f"{name}: default ≥ 97% of the binding limit", f"{d['binding_pct']:.1%} (adapt off "
             f"{off['binding_pct']:.1%})", d["binding_pct"] >= 0.97),
            (f"{name}: default 429s ≤ 0.5%", f"{d['pct429']:.2%} (adapt off {off['pct429']:.2%})",
             d["pct429"] <= 0.005),
            (f"{name}: default within 1 point of --adapt off", f"{d['binding_pct'] - off['binding_pct']:+.1%}",
             d["binding_pct"] >= off["binding_pct"] - 0.01),
        ]
    goals += [
        ("mixed: each model ≥ 97% of its own limit", f"{big['steady_pct']:.1%} / {small['steady_pct']:.1%}",
         big["steady_pct"] >= 0.97 and small["steady_pct"] >= 0.97),
        ("mixed: 429s < 0.5%", f"{mix['pct429']:.2%}", mix["pct429"] < 0.005),
        ("mixed: wall within 5% of the ideal", f"{mix['wall_over_ideal']:.1%}", mix["wall_over_ideal"] <= 1.05),
        ("strict window: 429s < 0.5%", f"{win['pct429']:.2%}", win["pct429"] < 0.005),
        ("strict window: ≥ 95% of the limit", f"{win['steady_pct']:.1%}", win["steady_pct"] >= 0.95),
        ("minute gateway: ≥ 90% of the limit, no line given up", f"{minute['pct']:.1%}, {minute['failed']} failed",
         minute["pct"] >= 0.90 and minute["failed"] == 0),
        ("queueing worker: ≥ 90% of the knee's throughput (lowest fixed level within 3% of the highest)",
         f"{queue['ratio']:.0%} of {queue['best']}", queue["ratio"] >= 0.90),
        ("queueing worker: p50 ≤ 2x the knee's", f"{queue['p50_ratio']:.1f}x", queue["p50_ratio"] <= 2.0),
    ]
    data = {"limits": cases, "mixed": mix, "strict": win, "minute": minute, "queue": queue}
    json.dumps(data, default=str)
    return Section("9. Pacing on every kind of server", body, goals, data)
