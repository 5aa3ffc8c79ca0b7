"""3. Rate-limit utilisation: the simulator enforces RPM/TPM (per-second buckets), batchchat runs at the same limits.

Two jobs run at once, each against its own simulator (both pinned to the server core; both clients on the
client core; together they need a few % of a core): a request-bound job (small requests, RPM binds) and a
token-bound job (long prompts, max_tokens 200, TPM binds). Latency is uniform 200-2,000 ms. From the
simulator's per-second series: admitted requests/min and tokens/min over the steady part (the first 5 s and
the last 3 s cut) as % of the limits, the 429s, and batchchat's wall time against the ideal (work / limit).
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, Section, log, run_client, simulator, table, write_chat_input

LATENCY = {"latency_ms": 200, "latency_max_ms": 2000}
JOBS = {
    # name: limits (same on both sides), prompt words, max_tokens, binding limit
    "request-bound": {"rpm": 6_000, "tpm": 50_000_000, "words": 6, "max_tokens": 16, "binds": "rpm"},
    "token-bound": {"rpm": 100_000, "tpm": 600_000, "words": 60, "max_tokens": 200, "binds": "tpm"},
}
HEAD, TAIL = 5, 3


def _cost(words: int, max_tokens: int) -> int:
    import orjson

    from batchchat.config.settings import JobDefaults
    from batchchat.input.parse import parse_line
    from batchchat.pacing.tokens import completion_cap, prompt_estimate
    from benchmarks.common import chat_body

    raw = orjson.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
                        "body": chat_body(10**6, words, max_tokens)})
    job = parse_line(raw, 1, JobDefaults())
    return prompt_estimate(job) + completion_cap(job)  # type: ignore[arg-type]


def _job(name: str, spec: dict[str, Any], seconds: float, work: Path) -> dict[str, Any]:
    per_s = spec["rpm"] / 60 if spec["binds"] == "rpm" else spec["tpm"] / 60 / _cost(spec["words"], spec["max_tokens"])
    n = int(per_s * seconds)
    inp = write_chat_input(work / f"util-{name}.jsonl", n, words=spec["words"], max_tokens=spec["max_tokens"])
    with simulator(seed=4, rpm=spec["rpm"], tpm=spec["tpm"], **LATENCY) as sim:
        log(f"utilisation {name}: {n:,} requests, ~{seconds:.0f} s")
        sim.reset_stats()
        r = run_client({"client": "batchchat", "input": str(inp), "output": str(work / f"util-{name}.out"),
                        "base_url": sim.base_url, "concurrency": 1024, "rpm": spec["rpm"], "tpm": spec["tpm"]},
                       timeout=seconds * 3 + 60)
        stats = sim.stats()
    r.pop("process", None)
    return {"n": n, "client": r, "stats": stats, "spec": spec}


def _analyse(name: str, job: dict[str, Any]) -> dict[str, Any]:
    spec, stats, client = job["spec"], job["stats"], job["client"]
    series = stats["series"]
    steady = series[HEAD:len(series) - TAIL] if len(series) > HEAD + TAIL + 2 else series
    secs = max(1, len(steady))
    rpm = sum(s["requests"] for s in steady) / secs * 60
    tpm = sum(s["tokens"] for s in steady) / secs * 60
    n429 = stats["rate_limited"] if isinstance(stats["rate_limited"], int) else sum(s["429"] for s in series)
    # ideal: the binding budget's work at exactly the limit
    by_rpm = spec["binds"] == "rpm"
    ideal = job["n"] / (spec["rpm"] / 60) if by_rpm else stats["tokens_admitted"] / (spec["tpm"] / 60)
    binding = rpm / spec["rpm"] if spec["binds"] == "rpm" else tpm / spec["tpm"]
    return {"name": name, "n": job["n"], "ok": client["ok"], "failed": client["failed"], "rpm": rpm, "tpm": tpm,
            "rpm_pct": rpm / spec["rpm"], "tpm_pct": tpm / spec["tpm"], "binding_pct": binding,
            "n429": n429, "pct429": n429 / max(1, stats["requests"]), "wall": client["elapsed"], "ideal": ideal,
            "over_ideal": client["elapsed"] / ideal - 1, "server_requests": stats["requests"]}


def _plot(name: str, job: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, spec = job["stats"]["series"], job["spec"]
    t = [s["t"] for s in series]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax1.plot(t, [s["requests"] for s in series], label="admitted requests/s")
    ax1.plot(t, [s["429"] for s in series], label="429s/s", color="tab:red")
    ax1.axhline(spec["rpm"] / 60, color="k", ls="--", label=f"limit {spec['rpm']:,} RPM")
    ax1.set_ylabel("requests/s")
    ax1.set_ylim(0, spec["rpm"] / 60 * 1.3 if spec["binds"] == "rpm" else None)
    ax1.legend(loc="lower center")
    ax2.plot(t, [s["tokens"] for s in series], label="admitted tokens/s", color="tab:green")
    ax2.axhline(spec["tpm"] / 60, color="k", ls="--", label=f"limit {spec['tpm']:,} TPM")
    ax2.set_ylabel("tokens/s")
    ax2.set_xlabel("seconds (simulator clock)")
    ax2.set_ylim(0, spec["tpm"] / 60 * 1.3 if spec["binds"] == "tpm" else None)
    ax2.legend(loc="lower center")
    fig.suptitle(f"batchchat, {name} job, same limits on both sides, latency 200-2,000 ms")
    fig.tight_layout()
    path = RESULTS_DIR / f"utilisation-{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def run(quick: bool, work: Path) -> Section:
    seconds = 15.0 if quick else 180.0
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(_job, name, spec, seconds, work) for name, spec in JOBS.items()}
        jobs = {name: f.result() for name, f in futures.items()}
    rows, goals, data, plots = [], [], {}, []
    for name, job in jobs.items():
        a = _analyse(name, job)
        data[name] = {**a, "series": job["stats"]["series"]}
        plots.append(_plot(name, job))
        spec = job["spec"]
        rows.append([name, f"{spec['rpm']:,} / {spec['tpm']:,}", a["n"], a["ok"], a["failed"],
                     f"{a['rpm_pct']:.1%}", f"{a['tpm_pct']:.1%}", a["n429"], f"{a['pct429']:.2%}",
                     a["wall"], a["ideal"], f"{a['over_ideal']:+.1%}"])
        goals += [
            (f"{name}: ≥ 97% of the binding limit ({spec['binds'].upper()})", f"{a['binding_pct']:.1%}",
             a["binding_pct"] >= 0.97),
            (f"{name}: 429s < 0.5%", f"{a['n429']} ({a['pct429']:.2%})", a["pct429"] < 0.005),
            (f"{name}: total time within 5% of ideal", f"{a['wall']:.1f} s vs {a['ideal']:.1f} s",
             a["over_ideal"] <= 0.05),
        ]
    body = (f"About {seconds:.0f} s of traffic per job, both jobs at once. Steady part = the series without its first "
            f"{HEAD} s and last {TAIL} s. Ideal time = requests / RPM (request-bound) or tokens charged / TPM "
            "(token-bound); wall time includes the pre-scan and the last answers' latency (up to 2 s).\n\n"
            + table(["job", "limits RPM / TPM", "requests", "ok", "failed", "RPM used (steady)", "TPM used (steady)",
                     "429s", "429 %", "wall s", "ideal s", "vs ideal"], rows)
            + "\n\n" + "\n".join(f"![{p}]({p})" for p in plots)
            + "\n\nCommand: `python -m benchmarks.run_all --only utilisation`.")
    return Section("3. Rate-limit utilisation", body, goals, data)
