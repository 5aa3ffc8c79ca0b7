"""How `batchchat tune` shows a sweep: a text table, each level's verdict, a PNG plot, and JSON."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from batchchat.tune.advice import Limits, Recommendation
from batchchat.tune.step import Step


def render_table(steps: list[Step]) -> str:
    """The sweep as a text table."""
    rows = ["concurrency  succeeded/s  errors/s  p50 ms  p95 ms  errors  429s",
            "-----------  -----------  --------  ------  ------  ------  ----"]
    for s in steps:
        rows.append(f"{s.concurrency:>11}  {s.succeeded_per_second:>11,.1f}  {s.failed_per_second:>8,.1f}  "
                    f"{s.latency_ms_p50:>6,.0f}  {s.latency_ms_p95:>6,.0f}  {100 * s.error_rate:>5.1f}%  "
                    f"{s.rate_limited_429:>4}")
    return "\n".join(rows)


def render_verdicts(recommendation: Recommendation) -> str:
    """Why each level was chosen or excluded, a line each."""
    return "\n".join(f"{level:>6} in flight: {why}" for level, why in recommendation.verdicts)


def plot(steps: list[Step], path: Path, recommendation: Recommendation | None = None) -> bool:
    """Write throughput, latency and error rate against concurrency as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    xs = [s.concurrency for s in steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    top.plot(xs, [s.succeeded_per_second for s in steps], "o-", label="succeeded/s")
    top.plot(xs, [s.failed_per_second for s in steps], "x--", color="orange", label="errors/s")
    top.set_ylabel("requests/s")
    if recommendation is not None:
        top.axvline(recommendation.concurrency, color="green", linestyle="--",
                    label=f"recommended {recommendation.concurrency}")
    top.legend(loc="upper left")
    errors = top.twinx()
    errors.plot(xs, [100 * s.error_rate for s in steps], "x:", color="red", label="errors %")
    errors.set_ylabel("errors %", color="red")
    bottom.plot(xs, [s.latency_ms_p50 for s in steps], "o-", label="p50")
    bottom.plot(xs, [s.latency_ms_p95 for s in steps], "s-", label="p95")
    bottom.set_ylabel("latency ms")
    bottom.set_xlabel("requests in flight (concurrency)")
    bottom.set_xscale("log", base=2)
    bottom.legend(loc="upper left")
    fig.suptitle("batchchat tune")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def steps_json(steps: list[Step], recommendation: Recommendation, limits: Limits | None = None) -> bytes:
    """The sweep, the limits it kept to (null: none known) and the recommendation as JSON."""
    data: dict[str, Any] = {"steps": [asdict(s) | {"error_rate": s.error_rate} for s in steps],
                            "limits": None if limits is None else asdict(limits),
                            "recommendation": asdict(recommendation) | {"flags": recommendation.flags()}}
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)
