"""Soak: 200,000 requests with 5% mixed faults through the real CLI, the simulator in its own process.

The job completes, one line per id, and the client's memory stays flat: its RSS (VmRSS from /proc) once
the job is 10% done and its peak after that are printed and compared. Run by `make test-slow`;
BATCHCHAT_SOAK_N sets another size.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import chat_jobs, run_args, start, write_jsonl

from batchchat.simulator import Simulator, SimulatorConfig

N = int(os.environ.get("BATCHCHAT_SOAK_N", "200000"))
FAULTS = ("500", "502", "503", "503_retry_after", "429", "429_retry_after", "drop", "hang", "truncate", "non_json")


def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@pytest.mark.slow
def test_soak_200k_requests_with_5_percent_faults_in_flat_memory(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(N))
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    faults = dict.fromkeys(FAULTS, 0.05 / len(FAULTS))
    config = SimulatorConfig(latency_ms=5, latency_max_ms=15, fault_rates=faults, seed=7)
    samples: list[tuple[float, int, int]] = []  # (seconds, output bytes, RSS KiB)
    with Simulator.in_subprocess(config) as sim:
        started = time.monotonic()
        proc = start(*run_args(sim.base_url, src, out, "--concurrency", "64", "--timeout", "1", "--summary-json",
                               summary, "--max-attempts", "6", "--max-wait", "0.02"))
        try:
            deadline = started + 1800
            while proc.poll() is None and time.monotonic() < deadline:
                rss = _rss_kib(proc.pid)
                size = out.stat().st_size if out.exists() else 0
                if rss is not None:
                    samples.append((time.monotonic() - started, size, rss))
                time.sleep(0.25)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wall = time.monotonic() - started
        stats = sim.stats()
    err = stderr.decode()
    assert "Traceback" not in err
    assert proc.returncode in (0, 1), err
    final_size = out.stat().st_size
    ids = set()
    failed = 0
    with out.open("rb") as handle:
        for raw in handle:
            line = orjson.loads(raw)
            ids.add(line["custom_id"])
            failed += line["error"] is not None
    assert len(ids) == N and out.read_bytes().count(b"\n") == N
    data = orjson.loads(summary.read_bytes())
    assert (data["succeeded"], data["failed"]) == (N - failed, failed)
    at_10 = next(rss for _, size, rss in samples if size >= final_size * 0.10)
    after_10 = [rss for _, size, rss in samples if size >= final_size * 0.10]
    at_100 = after_10[-1]
    peak = max(after_10)
    print(f"\nsoak: {N:,} requests, {failed:,} failed, {stats['requests']:,} server requests, "
          f"faults {sum(stats['faults'].values()):,}, wall {wall:.1f} s; client RSS at 10% {at_10 / 1024:.1f} MiB, "
          f"at 100% {at_100 / 1024:.1f} MiB, peak after 10% {peak / 1024:.1f} MiB ({len(samples)} samples)")
    assert peak <= at_10 * 1.25 + 16 * 1024, (at_10, peak)  # flat: no growth with the number of requests
