"""The spending cap over 20 seeded runs with faults and retries: never passed, and most of it used.

Each seed: a mixed job (gpt-4o-mini and gpt-4.1, 600 chat requests, max_tokens 64) runs once fault-free to learn
what the whole job costs; then again on a fresh simulator of the same seed with faults (500 5%, 503 3%, 429 3%,
dropped connections 1%) and `max_cost` = 40% of that. "Billed" is the simulator's `/stats` usage per model at the
shipped prices: what a provider would charge. "Spent" is batchchat's ledger, which also counts every dropped
connection at its full reservation (the provider may have billed it; this simulator does not), so spent >= billed.

With `--fleet N`, the capped run is N `batchchat run` processes, each on a shard of the file (`--shard K/N`), all
with `--shared` (a real redis-server) and one `--max-cost`: the cap the fleet shares (#14).

Run alone: `python -m benchmarks.bench_cap [--seeds 20] [--fleet 3]` (prints the markdown section); also
`run(quick, work)` for `benchmarks.run_all`.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import Section, client_env, log, simulator, table

MODELS = ("gpt-4o-mini", "gpt-4.1")
FAULTS = {"500": 0.05, "503": 0.03, "429": 0.03, "drop": 0.01}
SHARE = 0.4  # the cap, as a share of what the whole job costs


def write_job(path: Path, n: int) -> Path:
    with path.open("wb") as out:
        for i in range(n):
            out.write(orjson.dumps({
                "custom_id": f"q{i}", "model": MODELS[i % 3 == 0], "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Tell me about the number {i}, briefly. " * (1 + i % 5)}],
            }) + b"\n")
    return path


def billed_usd(stats: dict[str, Any]) -> float:
    from batchchat.money.cost import tokens_cost, usage_tokens
    from batchchat.money.prices import PriceTable

    table_ = PriceTable.load()
    total = 0.0
    for model, row in stats["models"].items():
        price = table_.price_for(model)
        if price is not None:
            usage = {"prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"]}
            total += tokens_cost(price, usage_tokens(usage)).total
    return total


OPTIONS = {"api_key": "sk-bench", "progress": "off", "backoff_base": 0.01, "backoff_max": 0.05, "max_wait": 0.2,
           "concurrency": 32}


def job_cost(seed: int, job: Path, work: Path) -> float:
    """What the whole job costs (the simulator's billed usage), run once without faults."""
    import batchchat

    with simulator(seed=seed) as sim:
        batchchat.run(job, work / f"full{seed}.jsonl", base_url=sim.base_url, **OPTIONS)
        return billed_usd(sim.stats())


def one_seed(seed: int, job: Path, work: Path) -> dict[str, Any]:
    import batchchat

    job_usd = job_cost(seed, job, work)
    cap = round(job_usd * SHARE, 6)
    with simulator(seed=seed, fault_rates=FAULTS) as sim:
        summary = batchchat.run(job, work / f"cap{seed}.jsonl", base_url=sim.base_url, max_cost=cap, **OPTIONS)
        billed = billed_usd(sim.stats())
    cost = summary.cost or {}
    return {"seed": seed, "job_usd": job_usd, "cap": cap, "billed": billed, "spent": cost.get("spent_usd", 0.0),
            "unknown_fate": cost.get("unknown_fate_attempts", 0), "attempts": summary.attempts,
            "retries": summary.retries, "exit": summary.exit_code, "left": summary.not_finished}


def one_fleet_seed(seed: int, job: Path, work: Path, fleet: int, url: str) -> dict[str, Any]:
    """As `one_seed`, with the capped run made by `fleet` CLI processes on shards sharing the cap through Redis
    (each one's stderr in `work`/fleetSEED-K.stderr)."""
    job_usd = job_cost(seed, job, work)
    cap = round(job_usd * SHARE, 6)
    with simulator(seed=seed, fault_rates=FAULTS) as sim, contextlib.ExitStack() as files:
        procs = [subprocess.Popen(
            [sys.executable, "-m", "batchchat", "run", str(job), "-o", str(work / f"fleet{seed}-{k}.jsonl"),
             "--base-url", sim.base_url, "--progress", "off", "--backoff-base", "0.01", "--backoff-max", "0.05",
             "--max-wait", "0.2", "--concurrency", str(max(4, 32 // fleet)), "--shard", f"{k}/{fleet}",
             "--shared", url, "--max-cost", str(cap), "--cap-name", f"bench-cap-{seed}",
             "--summary-json", str(work / f"fleet{seed}-{k}.summary.json")],
            env=client_env(), stdout=subprocess.DEVNULL,
            stderr=files.enter_context((work / f"fleet{seed}-{k}.stderr").open("wb")))
            for k in range(fleet)]
        codes = [p.wait(timeout=600) for p in procs]
        billed = billed_usd(sim.stats())
    summaries = [orjson.loads((work / f"fleet{seed}-{k}.summary.json").read_bytes()) for k in range(fleet)]
    costs = [s.get("cost") or {} for s in summaries]
    return {"seed": seed, "job_usd": job_usd, "cap": cap, "billed": billed,
            "spent": sum(c.get("spent_usd", 0.0) for c in costs),
            "unknown_fate": sum(c.get("unknown_fate_attempts", 0) for c in costs),
            "attempts": sum(s.get("attempts", 0) for s in summaries),
            "retries": sum(s.get("retries", 0) for s in summaries),
            "exit": "/".join(map(str, codes)), "left": sum(s.get("not_finished", 0) for s in summaries)}


def run(quick: bool, work: Path, seeds: int | None = None, fleet: int = 1) -> Section:
    if fleet > 1:
        from benchmarks.bench_fleet import redis

        with redis() as server:
            return _run(quick, work, seeds, fleet, server.url)
    return _run(quick, work, seeds, 1, "")


def _run(quick: bool, work: Path, seeds: int | None, fleet: int, url: str) -> Section:
    count = seeds or (5 if quick else 20)
    job = write_job(work / "cap-job.jsonl", 600)
    rows = []
    results = []
    for seed in range(1, count + 1):
        log(f"cap: seed {seed}/{count}" + (f", a fleet of {fleet}" if fleet > 1 else ""))
        r = one_fleet_seed(seed, job, work, fleet, url) if fleet > 1 else one_seed(seed, job, work)
        results.append(r)
        rows.append([r["seed"], f"${r['job_usd']:.5f}", f"${r['cap']:.5f}", f"${r['billed']:.5f}",
                     f"{100 * r['billed'] / r['cap']:.1f}%", f"${r['spent']:.5f}",
                     f"{100 * r['spent'] / r['cap']:.1f}%",
                     r["attempts"], r["retries"], r["unknown_fate"], r["left"], r["exit"]])
    never = all(r["billed"] <= r["cap"] and r["spent"] <= r["cap"] + 1e-12 for r in results)
    low_billed = min(r["billed"] / r["cap"] for r in results)
    low_spent = min(r["spent"] / r["cap"] for r in results)
    who = (f"{fleet} processes, each on a shard of the file, sharing one cap through Redis (`--shared`); "
           if fleet > 1 else "")
    body = (f"{who}{count} seeded runs of a 600-request job (gpt-4o-mini and gpt-4.1, max_tokens 64) with faults "
            f"{', '.join(f'{k} {v:.0%}' for k, v in FAULTS.items())}, retried, `--max-cost` = {SHARE:.0%} of what "
            "the job costs. Billed: the simulator's usage at the shipped prices. Spent: batchchat's ledger, which "
            "also counts each dropped connection (\"unknown fate\") at its full reservation.\n\n"
            + table(["seed", "job cost", "cap", "billed", "billed/cap", "spent", "spent/cap", "attempts", "retries",
                     "unknown fate", "left", "exit"], rows)
            + f"\n\nCommand: `python -m benchmarks.bench_cap --seeds {count}"
            + (f" --fleet {fleet}`." if fleet > 1 else "`."))
    goals = [
        (f"billed <= cap and spent <= cap, {count} runs", "every run" if never else "**passed in some run**", never),
        (">= 95% of the cap used (billed)", f"lowest {100 * low_billed:.1f}%", low_billed >= 0.95),
        (">= 95% of the cap used (spent, drops counted in full)", f"lowest {100 * low_spent:.1f}%",
         low_spent >= 0.95),
    ]
    title = f"Spending cap shared by {fleet} processes (--max-cost --shared)" if fleet > 1 else \
        "Spending cap (--max-cost)"
    return Section(title, body, goals, {"runs": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--fleet", type=int, default=1, help="processes sharing the cap through Redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        section = run(False, Path(tmp), args.seeds, args.fleet)
    print(section.markdown())


if __name__ == "__main__":
    main()
