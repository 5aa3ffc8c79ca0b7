"""11. Models in blocks and mixes: each model at its own limit whatever the file's order.

Two models with tenfold different limits (12,000 and 1,200 RPM), 200-2,000 ms latency, batchchat told nothing
(auto mode), in three files: interleaved 10:1 (at the ratio of the limits), 1:10 (the slow model holds most of
the work), and in blocks (every line of the fast model first, then the slow one's). Rates come from the
simulator's own per-model series; the ideal wall is the slowest model's work over its limit.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench_adaptive import _run_cli
from benchmarks.common import Section, chat_body, log, simulator, table

LATENCY = {"latency_ms": 200, "latency_max_ms": 2000}
FAST, SLOW = "gpt-4o-mini", "gpt-4o"
LIMITS = {FAST: 12_000, SLOW: 1_200}


def _write(path: Path, models: list[str]) -> Path:
    with path.open("wb") as out:
        for i, model in enumerate(models):
            out.write(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                    "body": chat_body(i) | {"model": model}}, option=orjson.OPT_APPEND_NEWLINE))
    return path


def files(quick: bool) -> dict[str, list[str]]:
    """The three orders: (file name, models line by line)."""
    seconds = 15 if quick else 30
    n_fast, n_slow = LIMITS[FAST] * seconds // 60, LIMITS[SLOW] * seconds // 60
    mixed = [FAST] * n_fast + [SLOW] * n_slow
    random.Random(21).shuffle(mixed)
    few_fast = [FAST] * (n_fast // 50) + [SLOW] * (2 * n_slow)  # 1:10 by lines
    random.Random(22).shuffle(few_fast)
    blocks = [FAST] * n_fast + [SLOW] * n_slow
    return {"interleaved 10:1": mixed, "interleaved 1:10": few_fast, "blocks (fast first)": blocks}


def _model_rate(series: list[dict[str, Any]]) -> tuple[float, int]:
    """(requests/s, seconds) over a model's own active seconds, without its first two and its last."""
    active = [i for i, s in enumerate(series) if s["requests"]]
    if not active:
        return 0.0, 0
    part = series[active[0] + 2:active[-1]] if active[-1] - active[0] > 6 else series[active[0]:active[-1] + 1]
    return sum(s["requests"] for s in part) / max(1, len(part)), active[-1] - active[0] + 1


def one(name: str, models: list[str], work: Path) -> dict[str, Any]:
    inp = _write(work / "blocks.jsonl", models)
    limits = {m: (rpm, 50_000_000) for m, rpm in LIMITS.items()}
    with simulator(seed=31, model_limits=limits, **LATENCY) as sim:
        log(f"blocks: {name}, {len(models):,} lines")
        client = _run_cli(inp, work / "blocks.out", sim.base_url, "--concurrency", "2048",
                          timeout=len(models) / 10 + 120)
        stats = sim.stats()
    (work / "blocks.out").unlink()
    counts = {m: models.count(m) for m in LIMITS}
    out: dict[str, Any] = {"n": len(models), "ok": client["succeeded"], "failed": client["failed"],
                           "n429": stats["rate_limited"], "wall": client["wall_seconds"],
                           "ideal": max(counts[m] / LIMITS[m] * 60 for m in LIMITS)}
    out["wall_over_ideal"] = out["wall"] / out["ideal"]
    for model, rpm in LIMITS.items():
        per_s, secs = _model_rate(stats["models"][model]["series"])
        ideal = counts[model] / rpm * 60
        out[model] = {"lines": counts[model], "rpm": rpm, "pct": per_s * 60 / rpm, "seconds": secs, "ideal": ideal,
                      "judged": ideal >= 10}  # a model's own rate is judged over at least 10 s of its work
    return out


def run(quick: bool, work: Path) -> Section:
    results = {name: one(name, models, work) for name, models in files(quick).items()}
    rows, goals = [], []
    for name, r in results.items():
        fast, slow = r[FAST], r[SLOW]
        fast_pct = f"{fast['pct']:.1%}" if fast["judged"] else f"n/a ({fast['seconds']} s, ideal {fast['ideal']:.1f} s)"
        rows.append([name, f"{fast['lines']:,} / {slow['lines']:,}", fast_pct,
                     f"{slow['pct']:.1%}", r["n429"], f"{r['wall']:.1f}", f"{r['ideal']:.1f}",
                     f"{r['wall_over_ideal']:.1%}", r["failed"]])
        judged = [m for m in (fast, slow) if m["judged"]]
        goals.append((f"{name}: each model ≥ 97% of its own limit", " / ".join(f"{m['pct']:.1%}" for m in judged),
                      all(m["pct"] >= 0.97 for m in judged)))
        goals.append((f"{name}: wall within 10% of the slowest model's ideal", f"{r['wall_over_ideal']:.1%}",
                      r["wall_over_ideal"] <= 1.10))
    body = ("Two models, " + f"{FAST} at {LIMITS[FAST]:,} RPM and {SLOW} at {LIMITS[SLOW]:,} RPM, 200-2,000 ms "
            "latency, batchchat told no limit (auto mode), `--concurrency 2048`. A model's own rate is taken over "
            "its own active seconds (without its first two and its last); one with under 10 s of work is not "
            "judged on it. Ideal wall: the slowest model's lines over its limit; the wall includes process start, "
            "each model's probe and the last answers' latency (up to 2 s).\n\n"
            + table(["file (order of lines)", f"lines {FAST} / {SLOW}", f"{FAST} % of its limit",
                     f"{SLOW} % of its limit", "429s", "wall s", "ideal s", "wall / ideal", "failed"], rows)
            + "\n\nCommand: `python -m benchmarks.run_all --only blocks`.")
    return Section("11. Models in blocks and mixes", body, goals, results)
