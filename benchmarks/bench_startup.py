"""6. Start-up: wall time of `batchchat --help`, of importing batchchat, and of a one-request run."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.common import PYTHON, Section, log, run_process, simulator, table, write_chat_input


def run(quick: bool, work: Path) -> Section:
    reps = 5 if quick else 9
    script = str(Path(PYTHON).parent / "batchchat")
    one = write_chat_input(work / "one.jsonl", 1)
    out = work / "one.out"
    rows, walls = [], {}
    with simulator(seed=7) as sim:
        cases = {
            "python -c pass (interpreter alone)": [PYTHON, "-c", "pass"],
            "python -c 'import batchchat'": [PYTHON, "-c", "import batchchat"],
            "batchchat --help": [script, "--help"],
            "batchchat run --help": [script, "run", "--help"],
            "batchchat run (1 request)": [script, "run", str(one), "-o", str(out), "--base-url", sim.base_url,
                                          "--progress", "off"],
        }
        for label, cmd in cases.items():
            log(f"start-up: {label}")
            times = []
            for _ in range(reps):
                out.unlink(missing_ok=True)
                p = run_process(cmd, timeout=60, env={"OPENAI_API_KEY": "sk-bench", "COLUMNS": "100"})
                if p.returncode != 0:
                    raise RuntimeError(f"{label} failed (rc {p.returncode}): {p.stderr[-2000:]}")
                times.append(p.wall * 1000)
            walls[label] = times
            rows.append([label, statistics.median(times), min(times), max(times)])
    body = (f"Wall time of {reps} runs each, ms (client core only).\n\n"
            + table(["command", "median ms", "min ms", "max ms"], rows)
            + "\n\nCommand: `python -m benchmarks.run_all --only startup`.")
    help_ms = statistics.median(walls["batchchat --help"])
    goals = [("`batchchat --help` < 300 ms", f"{help_ms:.0f} ms", help_ms < 300)]
    return Section("6. Start-up", body, goals, {"walls_ms": walls})
