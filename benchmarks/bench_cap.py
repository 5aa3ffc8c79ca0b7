"""The spending cap over 20 seeded runs with faults and retries: never passed, and most of it used.

Each seed: a mixed job (gpt-4o-mini and gpt-4.1, 600 chat requests, max_tokens 64) runs once fault-free to learn
what the whole job costs; then again on a fresh simulator of the same seed with faults (500 5%, 503 3%, 429 3%,
dropped connections 1%) and `max_cost` = 40% of that. "Billed" is the simulator's `/stats` usage per model at the
shipped prices: what a provider would charge. "Spent" is batchchat's ledger, which also counts every dropped
connection at its full reservation (the provider may have billed it; this simulator does not), so spent >= billed.

Run alone: `python -m benchmarks.bench_cap [--seeds 20]` (prints the markdown section); also `run(quick, work)`
for `benchmarks.run_all`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import Section, log, simulator, table

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


def one_seed(seed: int, job: Path, work: Path) -> dict[str, Any]:
    import batchchat

    options = {"api_key": "sk-bench", "progress": "off", "backoff_base": 0.01, "backoff_max": 0.05, "max_wait": 0.2,
               "concurrency": 32}
    with simulator(seed=seed) as sim:
        batchchat.run(job, work / f"full{seed}.jsonl", base_url=sim.base_url, **options)
        job_usd = billed_usd(sim.stats())
    cap = round(job_usd * SHARE, 6)
    with simulator(seed=seed, fault_rates=FAULTS) as sim:
        summary = batchchat.run(job, work / f"cap{seed}.jsonl", base_url=sim.base_url, max_cost=cap, **options)
        billed = billed_usd(sim.stats())
    cost = summary.cost or {}
    return {"seed": seed, "job_usd": job_usd, "cap": cap, "billed": billed, "spent": cost.get("spent_usd", 0.0),
            "unknown_fate": cost.get("unknown_fate_attempts", 0), "attempts": summary.attempts,
            "retries": summary.retries, "exit": summary.exit_code, "left": summary.not_finished}


def run(quick: bool, work: Path, seeds: int | None = None) -> Section:
    count = seeds or (5 if quick else 20)
    job = write_job(work / "cap-job.jsonl", 600)
    rows = []
    results = []
    for seed in range(1, count + 1):
        log(f"cap: seed {seed}/{count}")
        r = one_seed(seed, job, work)
        results.append(r)
        rows.append([r["seed"], f"${r['job_usd']:.5f}", f"${r['cap']:.5f}", f"${r['billed']:.5f}",
                     f"{100 * r['billed'] / r['cap']:.1f}%", f"${r['spent']:.5f}",
                     f"{100 * r['spent'] / r['cap']:.1f}%",
                     r["attempts"], r["retries"], r["unknown_fate"], r["left"], r["exit"]])
    never = all(r["billed"] <= r["cap"] and r["spent"] <= r["cap"] + 1e-12 for r in results)
    low_billed = min(r["billed"] / r["cap"] for r in results)
    low_spent = min(r["spent"] / r["cap"] for r in results)
    body = (f"{count} seeded runs of a 600-request job (gpt-4o-mini and gpt-4.1, max_tokens 64) with faults "
            f"{', '.join(f'{k} {v:.0%}' for k, v in FAULTS.items())}, retried, `--max-cost` = {SHARE:.0%} of what "
            "the job costs. Billed: the simulator's usage at the shipped prices. Spent: batchchat's ledger, which "
            "also counts each dropped connection (\"unknown fate\") at its full reservation.\n\n"
            + table(["seed", "job cost", "cap", "billed", "billed/cap", "spent", "spent/cap", "attempts", "retries",
                     "unknown fate", "left", "exit"], rows)
            + "\n\nCommand: `python -m benchmarks.bench_cap --seeds 20`.")
    goals = [
        (f"billed <= cap and spent <= cap, {count} runs", "every run" if never else "**passed in some run**", never),
        (">= 95% of the cap used (billed)", f"lowest {100 * low_billed:.1f}%", low_billed >= 0.95),
        (">= 95% of the cap used (spent, drops counted in full)", f"lowest {100 * low_spent:.1f}%",
         low_spent >= 0.95),
    ]
    return Section("Spending cap (--max-cost)", body, goals, {"runs": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        section = run(False, Path(tmp), args.seeds)
    print(section.markdown())


if __name__ == "__main__":
    main()
