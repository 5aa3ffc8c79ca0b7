"""8. `--via batch`: a 120,000-line job through the simulator's Batch API.

The client is the real CLI (`batchchat run --via batch`) in its own pinned process, its RSS sampled every
100 ms; the simulator runs in another process on the other core, its Batch API on a short time scale. The
wall time is split into the simulator's batch time (the union of its batches' created -> completed spans,
from `GET /v1/batches`) and batchchat's own share (split and upload before the first batch, collect after
the last, and the client's CPU seconds over the whole run).

Run: `python -m benchmarks.bench_batch` (prints the section; `--quick` for 30,000 lines).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import orjson

from benchmarks.common import PYTHON, Section, log, run_process, simulator, table, workdir, write_chat_input

LINES = 120_000
KEY = "sk-bench-batch-0123456789"


def _batches(base_url: str) -> list[dict]:
    items: list[dict] = []
    after = None
    with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {KEY}"}, timeout=30) as client:
        while True:
            params = {"limit": "100", **({"after": after} if after else {})}
            page = client.get("/batches", params=params).json()
            items += page["data"]
            if not page["has_more"]:
                return items
            after = page["last_id"]


def _union(spans: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def run(quick: bool, work: Path) -> Section:
    from batchchat.simulator.batch_config import BatchConfig

    n = 30_000 if quick else LINES
    inp = write_chat_input(work / "batch.jsonl", n)
    out = work / "batch.out.jsonl"
    summary_path = work / "summary.json"
    batch = BatchConfig(window_seconds=3600.0, validate_seconds=0.5, lines_per_second=10_000.0, finalize_seconds=0.5)
    with simulator(seed=8, api_key=KEY, batch=batch) as sim:
        log(f"batch: {n:,} lines through the Batch API")
        cmd = [PYTHON, "-m", "batchchat", "run", str(inp), "-o", str(out), "--via", "batch", "--base-url",
               sim.base_url, "--poll-interval", "0.25", "--progress", "off", "--summary-json", str(summary_path)]
        if quick:
            cmd += ["--batch-max-requests", "10000"]
        started = time.time()
        r = run_process(cmd, timeout=900, sample=0.1, watch=out, env={"OPENAI_API_KEY": KEY})
        assert r.returncode == 0, r.stderr[-3000:]
        stats = sim.stats()["batch"]
        batches = _batches(sim.base_url)
    summary = orjson.loads(summary_path.read_bytes())
    seen: set[str] = set()
    repeats = 0
    with out.open("rb") as handle:
        for raw in handle:
            custom_id = orjson.loads(raw)["custom_id"]
            repeats += custom_id in seen
            seen.add(custom_id)
    every_once = repeats == 0 and seen == {f"r{i}" for i in range(n)}
    twice = sum(1 for _, c in stats["uploads_by_filename"] if c > 1) + sum(
        1 for _, c in stats["batches_by_input_file"] if c > 1)
    spans = [(b["created_at"], b["completed_at"]) for b in batches if b.get("completed_at")]
    sim_time = _union(spans)
    before = min(a for a, _ in spans) - started  # scan, split, first upload and creation
    after = started + r.wall - max(b for _, b in spans)  # last poll, download, write, compact
    cpu = r.user + r.system
    rows = [[n, len(batches), stats["files_uploaded"], summary["succeeded"], summary["failed"], r.wall, sim_time,
             r.wall - sim_time, before, after, cpu, r.maxrss_mb]]
    body = (f"{n:,} small chat lines ({inp.stat().st_size / 1e6:,.0f} MB) through `batchchat run --via batch` "
            "against the simulator's Batch API (validating 0.5 s, 10,000 lines/s per batch, finalizing 0.5 s; "
            "batches of one model are validated one at a time until its enqueued-token limit is known).\n\n"
            + table(["lines", "batches", "files uploaded", "ok", "failed", "wall s", "simulator batch s",
                     "wall - batch s", "before 1st batch s", "after last batch s", "client CPU s", "peak RSS MB"],
                    rows)
            + "\n\n`simulator batch s` is the union of the batches' created_at -> completed_at spans (whole "
            "seconds, from `GET /v1/batches`); `wall - batch s` is batchchat's own time: before the first batch "
            "(start-up, scan, split, upload; whole-second timestamps, so +-1 s) and after the last (download, "
            "write the output; this includes the simulator producing a batch's answers, which it does lazily on the "
            "polls that find it finished, on its own core); `client CPU s` is user + system CPU of the client "
            "process over the whole run (start-up, scan, split, polling, collect): batchchat's own work, which "
            "does not grow with the batch time.\n\n"
            f"Command: `python -m benchmarks.bench_batch{' --quick' if quick else ''}`.")
    goals = [
        ("at least 3 batch files", f"{len(batches)}", len(batches) >= 3),
        ("every id exactly once in the output", f"{len(seen):,} ids, {repeats} repeated", every_once),
        ("0 files uploaded twice, 0 batches created twice", f"{twice}", twice == 0),
        ("peak RSS < 150 MB", f"{r.maxrss_mb:.0f} MB", r.maxrss_mb < 150),
        ("wall time dominated by the simulator's batch time (batch spans >= half the wall)",
         f"{sim_time} s of {r.wall:.1f} s", sim_time >= 0.5 * r.wall),
        ("batchchat's own CPU a minor share of the wall (< 50%)", f"{cpu:.1f} s of {r.wall:.1f} s "
         f"({100 * cpu / r.wall:.0f}%)", cpu < 0.5 * r.wall),
    ]
    return Section("8. Batch API (`--via batch`)", body, goals,
                   {"wall": r.wall, "sim_batch_seconds": sim_time, "client_cpu": cpu, "peak_rss_mb": r.maxrss_mb,
                    "batches": len(batches)})


def main() -> None:
    quick = "--quick" in sys.argv
    with workdir() as work:
        section = run(quick, work)
    print(section.markdown())
    sys.exit(0 if all(ok for _, _, ok in section.goals) else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
