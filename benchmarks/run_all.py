"""Run every benchmark side by side and write benchmarks/results/RESULTS.md (+ RESULTS.json, PNG plots).

    python -m benchmarks.run_all            # the full run (make bench), about 30 minutes on 2 cores
    python -m benchmarks.run_all --quick    # smaller sizes, about 9 minutes (make bench-quick)
    python -m benchmarks.run_all --only pacing,fleet   # rerun some: the other sections of RESULTS.md are kept

Measured on 2 cores: the full run's parts take about throughput 1, latency 1, utilisation 3, memory 4,
resume 1.5, startup 0.2, adaptive 4, cap 0.5, cap_fleet 2, batch 0.2, pacing 13, fleet 8, blocks 3, data 9 and
cpu 5 minutes. With `--only` and an existing report the new sections are merged into it (benchmarks/report.py
says how); plots
are always written to benchmarks/results/, whatever `--out` says.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
import traceback
from pathlib import Path

from benchmarks import report
from benchmarks.common import RESULTS_DIR, Section, log, machine_info, table, workdir

BENCHES = ["throughput", "latency", "utilisation", "memory", "resume", "startup", "adaptive", "cap", "cap_fleet",
           "batch", "pacing", "fleet", "blocks", "data", "cpu"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--out", default=str(RESULTS_DIR / "RESULTS.md"), help="where to write the report")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or BENCHES
    unknown = set(names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sections: list[Section] = []
    timings: dict[str, float] = {}
    with workdir() as work:
        for name in names:
            t0 = time.perf_counter()
            module = importlib.import_module(f"benchmarks.bench_{name}")
            try:
                sections.append(module.run(args.quick, work))
            except Exception as exc:  # one broken benchmark must not lose the others' numbers
                traceback.print_exc()
                sections.append(Section(f"{name}: FAILED", f"```\n{type(exc).__name__}: {exc}\n```",
                                        [(f"{name} ran", "failed", False)]))
            timings[name] = time.perf_counter() - t0
            log(f"{name} done in {timings[name]:.0f} s")
            for f in work.iterdir():  # some benchmarks (fleet) leave directories
                if f.is_dir():
                    shutil.rmtree(f)
                else:
                    f.unlink()
    total = time.perf_counter() - started
    info = machine_info()
    mode = "quick" if args.quick else "full"
    out = Path(args.out)
    fresh = list(zip(names, sections, strict=True))
    raw = {"mode": mode, "machine": info, "timings": timings, "sections": {s.title: s.data for s in sections}}
    if args.only and out.exists():  # keep the sections not run this time (benchmarks/report.py says how)
        # the machine table stays the first run's: each rerun names its own CPU
        note = {name: f"{mode}, {info['date']}, {timings[name]:.0f} s, {info['cpu']}" for name in names}
        report_text, replaced = report.merge(out.read_text(), fresh, note)
        json_path = out.with_suffix(".json")
        old = json.loads(json_path.read_text()) if json_path.exists() else {}
        reruns = {name: {"mode": mode, "seconds": timings[name], "machine": info} for name in names}
        raw = report.merge_json(old, {**raw, "reruns": reruns}, replaced)
    else:
        label = "quick (`make bench-quick`)" if args.quick else "full (`make bench`)"
        head = "\n".join([
            "# batchchat benchmarks", "",
            f"Mode: {label}; benchmarks: {', '.join(names)}; total wall time {total / 60:.1f} min "
            f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}).", "",
            "Every client talks only to the simulator on 127.0.0.1; simulator and client run in separate processes "
            "pinned to different cores; every client loop runs on uvloop.", "",
            table(["machine", ""], [[k, v] for k, v in info.items()]), "", ""])
        parts = [report.section_part(name, s) for name, s in fresh]
        report_text = report.render(head, report.goal_rows(parts, {s.title: s for s in sections}), parts)
    out.write_text(report_text)
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    log(f"wrote {out} in {total / 60:.1f} min")
    print(report_text)
    return 0  # a missed goal is reported in RESULTS.md, not an error of the run


if __name__ == "__main__":
    sys.exit(main())
