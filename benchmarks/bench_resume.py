"""5. Resume: rerun a job whose output already holds every id done; time and RSS of a run with nothing to do.

The done output is written as a run writes it (`batchchat.output.lines.encode_result`, each line shaped like a real
answer, with its request's fingerprint and its input line's hash), without a state file: the first rerun reads
the whole output and pre-scans the whole input (the resume index and the line hashes). That rerun finds the job
finished and seals it in its state file (`batchchat.output.seal`), as any run that finishes a job does, so the
reruns after it are what a cron job meets when it reruns a finished job. The runs are the CLI,
`batchchat run IN -o OUT --base-url ... --progress off`, interpreter start-up included.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import PYTHON, Section, log, run_process, simulator, table, write_chat_input


def write_done_output(inp: Path, path: Path) -> None:
    """An output answering every line of `inp` as a run under no defaults would have."""
    from batchchat.config.settings import JobDefaults
    from batchchat.input.parse import Job, parse_line
    from batchchat.input.reader import iter_raw_lines
    from batchchat.output.lines import Result, encode_result, line_hasher, request_fingerprint

    usage = {"prompt_tokens": 13, "completion_tokens": 16, "total_tokens": 29}
    defaults = JobDefaults()
    line_hash = line_hasher(defaults)
    with path.open("wb") as out:
        chunk = []
        for i, (line_no, raw) in enumerate(iter_raw_lines(inp)):
            job = parse_line(raw, line_no, defaults)
            assert isinstance(job, Job)
            body = orjson.dumps({"id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1700000000,
                                 "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {
                                     "role": "assistant", "content": "Lorem ipsum dolor sit amet consectetur"},
                                     "finish_reason": "stop"}], "usage": usage})
            chunk.append(encode_result(Result(
                job.custom_id, line_no, 200, body, f"req_{i:012x}", attempts=1, latency=0.25, usage=usage,
                fingerprint=request_fingerprint(job.url, job.body), line_hash=line_hash(raw)),
                f"batch_req_bench{i:08x}"))
            if len(chunk) >= 10_000:
                out.write(b"".join(chunk))
                chunk.clear()
        out.write(b"".join(chunk))


def resume_figures(n: int, work: Path, reruns: int = 3) -> dict[str, Any]:
    """Wall, CPU and peak RSS of the first rerun of an `n`-line finished job (no state file) and of the reruns
    after it (sealed)."""
    inp = write_chat_input(work / "resume.jsonl", n)
    out = work / "resume.out"
    log(f"resume: writing {n:,} done lines")
    write_done_output(inp, out)
    size = out.stat().st_size
    runs = []
    with simulator(seed=6) as sim:
        for i in range(1 + reruns):
            log(f"resume: {n:,} done ids, run {i + 1}/{1 + reruns}")
            p = run_process([PYTHON, "-m", "batchchat", "run", str(inp), "-o", str(out), "--base-url", sim.base_url,
                             "--progress", "off"], timeout=300, env={"OPENAI_API_KEY": "sk-bench"})
            if p.returncode != 0:
                raise RuntimeError(f"resume run failed (rc {p.returncode}): {p.stderr[-2000:]}")
            runs.append(p)
        sent = sim.stats()["requests"]
    if out.stat().st_size != size:
        raise RuntimeError("the resume run changed the output")
    first, sealed = runs[0], runs[1:]
    return {"n": n, "size_mb": size / 1e6, "sent": sent,
            "first_wall": first.wall, "first_cpu": first.user + first.system, "first_rss": first.maxrss_mb,
            "sealed_wall": statistics.median(p.wall for p in sealed),
            "sealed_cpu": statistics.median(p.user + p.system for p in sealed),
            "sealed_rss": max(p.maxrss_mb for p in sealed)}


def resume_rows(f: dict[str, Any]) -> str:
    """The figures as a table."""
    return table(["rerun of a finished job", "done ids", "output size", "wall s", "CPU s", "peak RSS MB",
                  "requests sent"],
                 [["first (no state file: reads the output, pre-scans the input)", f["n"], f"{f['size_mb']:,.0f} MB",
                   f["first_wall"], f["first_cpu"], f["first_rss"], f["sent"]],
                  ["after it (sealed, as a cron rerun meets it; median)", f["n"], f"{f['size_mb']:,.0f} MB",
                   f["sealed_wall"], f["sealed_cpu"], f["sealed_rss"], f["sent"]]])


def run(quick: bool, work: Path) -> Section:
    n = 100_000 if quick else 1_000_000
    f = resume_figures(n, work)
    body = ("Output holds every id as done; each run must send nothing and leave the output unchanged.\n\n"
            + resume_rows(f) + "\n\nCommand: `python -m benchmarks.run_all --only resume`.")
    goals = [(f"first rerun with {n:,} done ids < 5 s", f"{f['first_wall']:.2f} s", f["first_wall"] < 5),
             (f"a finished job's rerun with {n:,} done ids < 3 s, ≤ 100 MB",
              f"{f['sealed_wall']:.2f} s, {f['sealed_rss']:.0f} MB", f["sealed_wall"] < 3 and f["sealed_rss"] <= 100),
             ("nothing re-sent", str(f["sent"]), f["sent"] == 0)]
    return Section("5. Resume", body, goals, f)
