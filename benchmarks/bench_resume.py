"""5. Resume: start a run whose output already holds every id done; time and RSS of a run with nothing to do.

The done output is generated with `batchchat.output.lines.encode_result`, each line shaped like a real answer.
The run is the CLI, `batchchat run IN -o OUT --base-url ... --progress off`, so it includes interpreter start-up.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from benchmarks.common import PYTHON, Section, log, run_process, simulator, table, write_chat_input


def write_done_output(path: Path, n: int) -> None:
    from batchchat.output.lines import Result, encode_result

    usage = {"prompt_tokens": 13, "completion_tokens": 16, "total_tokens": 29}
    with path.open("wb") as out:
        chunk = []
        for i in range(n):
            body = orjson.dumps({"id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1700000000,
                                 "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {
                                     "role": "assistant", "content": "Lorem ipsum dolor sit amet consectetur"},
                                     "finish_reason": "stop"}], "usage": usage})
            chunk.append(encode_result(Result(f"r{i}", i + 1, 200, body, f"req_{i:012x}", attempts=1, latency=0.25,
                                              usage=usage), f"batch_req_bench{i:08x}"))
            if len(chunk) >= 10_000:
                out.write(b"".join(chunk))
                chunk.clear()
        out.write(b"".join(chunk))


def run(quick: bool, work: Path) -> Section:
    n = 100_000 if quick else 1_000_000
    inp = write_chat_input(work / "resume.jsonl", n)
    out = work / "resume.out"
    write_done_output(out, n)
    size = out.stat().st_size
    runs = []
    with simulator(seed=6) as sim:
        for i in range(3):
            log(f"resume: {n:,} done ids, run {i + 1}/3")
            p = run_process([PYTHON, "-m", "batchchat", "run", str(inp), "-o", str(out), "--base-url", sim.base_url,
                             "--progress", "off"], timeout=300, env={"OPENAI_API_KEY": "sk-bench"})
            if p.returncode != 0:
                raise RuntimeError(f"resume run failed (rc {p.returncode}): {p.stderr[-2000:]}")
            runs.append(p)
        sent = sim.stats()["requests"]
    if out.stat().st_size != size:
        raise RuntimeError("the resume run changed the output")
    best = min(runs, key=lambda p: p.wall)
    rows = [[n, f"{size / 1e6:,.0f} MB", f"{best.wall:.2f}", f"{sorted(p.wall for p in runs)[1]:.2f}",
             best.user + best.system, max(p.maxrss_mb for p in runs), sent]]
    body = ("Output holds every id as done; the run must send nothing and leave the output unchanged.\n\n"
            + table(["done ids", "output size", "wall s (best of 3)", "wall s (median)", "CPU s", "peak RSS MB",
                     "requests sent"], rows)
            + "\n\nCommand: `python -m benchmarks.run_all --only resume`.")
    goals = [(f"resume with {n:,} done ids < 5 s", f"{best.wall:.2f} s", best.wall < 5),
             ("nothing re-sent", str(sent), sent == 0)]
    return Section("5. Resume", body, goals, {"wall": [p.wall for p in runs], "maxrss_mb": [p.maxrss_mb for p in runs]})
