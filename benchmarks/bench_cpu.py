"""Client CPU against the bare loop and the previous build, side by side; and a finished job's resume.

Whole processes, CPU time from the OS (user + system of each finished child, `wait4`), start-up included: the
same 30,000 small chat requests (zero latency, 64 in flight) sent by
- today's build: `python -m batchchat run IN -o OUT --concurrency 64 --rpm 1e8 --tpm 1e11 --progress off` (limits
  given and out of reach, so all 64 stay in flight, as in the bare loop), and again with no limits given (adapt
  auto: the concurrency controller picks how many fly);
- the bare loop: aiohttp + `asyncio.Semaphore(64)` (`benchmarks.alternatives`), parsing each answer, writing
  nothing;
- the previous build, a pinned commit (`PREVIOUS`, or `--previous COMMIT`, or `BENCH_CPU_PREVIOUS`) installed with
  the same dependency versions in a venv of its own under `CACHE` (made once, kept).
Rounds are interleaved (each round runs every client once, the order turned round each time) and every ratio is
the median of the per-round ratios, so a machine that drifts or is shared moves all clients alike. Move
`PREVIOUS` forward to a release once one is measured good.

The resume part is `bench_resume.resume_figures`: a 1M-line finished job rerun (time and peak RSS).

    python -m benchmarks.run_all --only cpu
    python -m benchmarks.bench_cpu [--quick] [--previous COMMIT] [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import venv
from pathlib import Path

from benchmarks.common import (
    PYTHON,
    REPO,
    Section,
    client_env,
    log,
    run_process,
    simulator,
    table,
    workdir,
    write_chat_input,
)

PREVIOUS = "a6c68e4"  # the build of 2026-12-02: 1.54x the bare loop then; move it forward as builds improve
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "batchchat-bench"
CONCURRENCY = 64
LIMITS = ["--rpm", "100000000", "--tpm", "100000000000"]  # given, never reached
GOAL_VS_BARE = 1.3
HUNG = 300  # seconds: a client run still going then is killed and counted as hung (a run takes ~10 s)


def previous_commit() -> str:
    return os.environ.get("BENCH_CPU_PREVIOUS", PREVIOUS)


def previous_python(commit: str) -> Path:
    """The python of a venv holding `commit` of this repository, installed with today's dependency versions."""
    freeze = subprocess.run([PYTHON, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True,
                            check=True).stdout
    constraints = "\n".join(line for line in freeze.splitlines() if not line.lower().startswith("batchchat"))
    key = hashlib.sha256(f"{commit}\n{constraints}".encode()).hexdigest()[:12]
    home = CACHE / f"build-{commit}-{key}"
    python = home / "venv" / "bin" / "python"
    if (home / "ready").exists() and python.exists():
        return python
    log(f"cpu: installing the previous build {commit} in {home} (once)")
    shutil.rmtree(home, ignore_errors=True)
    (home / "src").mkdir(parents=True)
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], stdout=archive, check=True)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(home / "src", filter="data")
    (home / "constraints.txt").write_text(constraints + "\n")
    venv.create(home / "venv", with_pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", str(home / "constraints.txt"),
                    str(home / "src")], check=True)
    (home / "ready").write_text(commit + "\n")
    return python


def clients(prev: Path | None, inp: Path, out: Path, base_url: str) -> dict[str, list[str]]:
    """The command of each client, by name."""
    run = ["-m", "batchchat", "run", str(inp), "-o", str(out), "--base-url", base_url, "--progress", "off",
           "--concurrency", str(CONCURRENCY)]
    spec = json.dumps({"client": "aiohttp", "input": str(inp), "output": str(out), "base_url": base_url,
                       "concurrency": CONCURRENCY})
    found = {"today": [PYTHON, *run, *LIMITS], "bare": [PYTHON, "-m", "benchmarks.alternatives", spec],
             "today, no limits given": [PYTHON, *run]}
    if prev is not None:
        found["previous"] = [str(prev), *run, *LIMITS]
    return found


def _clean(out: Path) -> None:
    for path in out.parent.glob(out.name + "*"):
        path.unlink()


def measure(n: int, rounds: int, work: Path, prev: Path | None) -> tuple[dict[str, list[float]], dict[str, int]]:
    """CPU seconds of each client in each round, and how many runs of each hung (killed after `HUNG` s)."""
    inp = write_chat_input(work / f"cpu-{n}.jsonl", n)
    out = work / "cpu.out.jsonl"
    cpu: dict[str, list[float]] = {}
    hung: dict[str, int] = {}
    env = client_env()
    with simulator(seed=3) as sim:
        commands = clients(prev, inp, out, sim.base_url)
        order = list(commands)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                _clean(out)
                sim.reset_stats()
                try:
                    p = run_process(commands[name], timeout=HUNG, env=env)
                except TimeoutError:  # said in the report; the other clients' figures still count
                    hung[name] = hung.get(name, 0) + 1
                    log(f"cpu: round {r + 1}/{rounds} {name}: still running after {HUNG} s, killed")
                    continue
                served = sim.stats()["requests"]
                if p.returncode != 0 or served < n:
                    raise RuntimeError(f"cpu: {name} failed (rc {p.returncode}, {served} requests): {p.stderr[-2000:]}")
                cpu.setdefault(name, []).append(p.user + p.system)
                log(f"cpu: round {r + 1}/{rounds} {name}: {p.user + p.system:.2f} s CPU")
        _clean(out)
    return cpu, hung


def ratio(cpu: dict[str, list[float]], a: str, b: str) -> float:
    """The median of the per-round ratios a/b (rounds where either hung left out)."""
    pairs = list(zip(cpu.get(a, []), cpu.get(b, []), strict=False))
    return statistics.median(x / y for x, y in pairs) if pairs else float("nan")


def run(quick: bool, work: Path, previous: str | None = None, rounds: int | None = None) -> Section:
    from benchmarks.bench_resume import resume_figures, resume_rows

    n = 10_000 if quick else 30_000
    rounds = rounds or (3 if quick else 5)
    commit = previous or previous_commit()
    try:
        prev: Path | None = previous_python(commit)
    except (subprocess.CalledProcessError, OSError) as exc:
        log(f"cpu: the previous build {commit} could not be installed ({exc}); measured without it")
        prev = None
    cpu, hung = measure(n, rounds, work, prev)
    rows = []
    for name in [*cpu, *(h for h in hung if h not in cpu)]:
        values = cpu.get(name, [])
        median = statistics.median(values) if values else float("nan")
        rows.append([name + (f" ({hung[name]} of {rounds} runs hung, killed after {HUNG} s)" if name in hung else ""),
                     f"{median:.2f}", f"{median / n * 1e6:.0f}", f"{ratio(cpu, name, 'bare'):.2f}x",
                     f"{ratio(cpu, name, 'previous'):.2f}x" if prev is not None else "-"])
    today = ratio(cpu, "today", "bare")
    body = (f"{n:,} requests, zero latency, {CONCURRENCY} in flight, {rounds} interleaved rounds; whole processes "
            "(start-up included), CPU = user + system from the OS. Previous build: "
            f"`{commit}`{'' if prev is not None else ' (could not be installed: not measured)'}, in its own venv "
            "with today's dependency versions. Ratios are medians of the per-round ratios.\n\n"
            + table(["client", "CPU s (median)", "µs a request", "vs bare loop", "vs previous build"], rows)
            + "\n\nCommand: `python -m benchmarks.run_all --only cpu` (or `python -m benchmarks.bench_cpu "
            "--previous COMMIT`).")
    goals = [(f"today's build ≤ {GOAL_VS_BARE}x the bare aiohttp loop's CPU", f"{today:.2f}x",
              today <= GOAL_VS_BARE)]
    if prev is not None:
        vs_prev = ratio(cpu, "today", "previous")
        goals.append((f"today's build ≤ the previous build ({commit})", f"{vs_prev:.2f}x", vs_prev <= 1.0))
    figures = resume_figures(1_000_000, work)
    body += "\n\n" + resume_rows(figures)
    goals += [("a finished 1M-line job's rerun < 3 s", f"{figures['sealed_wall']:.2f} s", figures["sealed_wall"] < 3),
              ("... in ≤ 100 MB", f"{figures['sealed_rss']:.0f} MB", figures["sealed_rss"] <= 100)]
    return Section("Client CPU against the bare loop and the previous build", body, goals,
                   {"n": n, "rounds": rounds, "previous": commit, "cpu": cpu, "hung": hung, "resume": figures})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--previous", default=None, help=f"commit of the previous build (default {PREVIOUS})")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    with workdir() as work:
        print(run(args.quick, work, args.previous, args.rounds).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
