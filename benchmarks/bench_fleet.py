"""10. A fleet on one key: four batchchat processes share one budget through Redis (`--shared`).

Four processes on "two hosts" (two working directories; host B starts `HOST_B_DELAY` s after host A), each
running a quarter of one input file (`--shard K/4`), all on one API key and one model, each told the whole limit,
against one simulator that enforces it (latency uniform 200-2,000 ms). Scenarios:
- shared: `--shared redis://...` (one budget for the four);
- alone: the same four without `--shared` (each paces alone, as if it owned the limit);
- auto: shared, no limit given (auto mode): the first process learns the limits from the headers and
  publishes them, the others take them from Redis without probing;
- strict: shared, against a simulator that admits exactly one second's worth per whole second;
- skew: shared, one process's clock offset by +7 s (libfaketime; skipped when `faketime` is not installed);
- outage: shared, Redis stopped for `OUTAGE` s mid-run and started again (empty: nothing persisted);
- overhead: one process, zero-latency server, no server limits, `--adapt off` with limits far above what it
  can send (every request reserves through its store): requests/s with `--shared` against without.
From the simulator's per-second series: admitted requests/s over the steady part (the first `HEAD` and last
`TAIL` seconds cut) as % of the limit, the worst second, the 429s; from the outputs: every id once after
`batchchat merge`. Per-process completions are counted by polling each output file every `POLL` s.

    python -m benchmarks.bench_fleet [--quick] [--only shared,alone,strict,skew,outage,overhead]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    CLIENT_CPU,
    PYTHON,
    RESULTS_DIR,
    SERVER_CPU,
    Section,
    client_env,
    log,
    simulator,
    table,
    verdict,
    workdir,
    write_chat_input,
)

RPM = 6_000  # 100 requests/s: the binding limit
TPM = 50_000_000  # never binding
LATENCY = {"latency_ms": 200, "latency_max_ms": 2000}
PROCS = 4
HOST_B_DELAY = 3.0
HEAD, TAIL = 5, 3
POLL = 0.5
OUTAGE = 10.0
SKEW = "+7s"
SCENARIOS = ("shared", "alone", "auto", "strict", "skew", "outage", "overhead")


class RedisProcess:
    """A redis-server on a fixed free loopback port, pinned to the server core; `stop()`/`start()` again."""

    def __init__(self, pin: bool = True) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (make bench installs it; or apt-get install redis-server)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.directory = tempfile.mkdtemp(prefix="batchchat-bench-redis-")
        self.command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                        "no", "--dir", self.directory]
        if pin and shutil.which("taskset"):
            self.command = ["taskset", "-c", str(SERVER_CPU), *self.command]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def redis(pin: bool = True) -> Iterator[RedisProcess]:
    server = RedisProcess(pin)
    server.start()
    try:
        yield server
    finally:
        server.close()


def _pin() -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {CLIENT_CPU})


class LineCounter:
    """Counts the lines of a growing file, reading only what was appended since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def poll(self) -> int:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
            self.offset += len(data)
            self.lines += data.count(b"\n")
        return self.lines


def _fleet(name: str, work: Path, seconds: float, *, url: str | None, kind: str = "bucket",
           skew: str | None = None, outage: tuple[float, float] | None = None,
           server: RedisProcess | None = None, given: bool = True) -> dict[str, Any]:
    """Run the four processes to the end (`given`: each told the limit; else auto mode): the simulator's stats,
    per-process completions, exit codes, merge."""
    from batchchat.output.merge import merge

    n = int(RPM / 60 * seconds)
    source = write_chat_input(work / f"{name}.jsonl", n)
    hosts = [work / f"{name}-hostA", work / f"{name}-hostB"]
    for host in hosts:
        host.mkdir()
    outputs = [hosts[k * 2 // PROCS] / f"part{k}.results.jsonl" for k in range(PROCS)]
    with simulator(seed=9, rpm=RPM, tpm=TPM, limit_kind=kind, **LATENCY) as sim:
        log(f"fleet {name}: {PROCS} processes, {n:,} requests, ~{seconds:.0f} s at the limit")
        sim.reset_stats()
        procs: list[subprocess.Popen[bytes]] = []
        errs = []
        counters = [LineCounter(out) for out in outputs]
        samples: list[tuple[float, list[int]]] = []
        start = time.monotonic()
        outage_log: list[str] = []
        try:
            for k in range(PROCS):
                if k == PROCS // 2:
                    time.sleep(max(0.0, start + HOST_B_DELAY - time.monotonic()))
                command = [PYTHON, "-m", "batchchat", "run", str(source), "--shard", f"{k}/{PROCS}", "-o",
                           str(outputs[k]), "--base-url", sim.base_url, "--concurrency", "256", "--progress", "off",
                           "--summary-json", str(outputs[k].with_suffix(".summary.json"))]
                if given:
                    command += ["--rpm", str(RPM), "--tpm", str(TPM)]
                if url:
                    command += ["--shared", url]
                if skew and k == PROCS - 1:
                    command = ["faketime", "-f", skew, *command]
                err = (work / f"{name}-{k}.stderr").open("wb")
                errs.append(err)
                procs.append(subprocess.Popen(command, cwd=outputs[k].parent, env=client_env(),
                                              stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_pin))
            deadline = start + seconds * 4 + 120
            while any(p.poll() is None for p in procs):
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"fleet {name} took longer than {deadline - start:.0f} s")
                if outage and server is not None:
                    if server.process is not None and not outage_log and now - start >= outage[0]:
                        server.stop()
                        outage_log.append(f"Redis stopped at {now - start:.1f} s")
                    elif server.process is None and now - start >= outage[1]:
                        server.start()
                        outage_log.append(f"Redis started again at {time.monotonic() - start:.1f} s")
                samples.append((now - start, [c.poll() for c in counters]))
                time.sleep(POLL)
            samples.append((time.monotonic() - start, [c.poll() for c in counters]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for err in errs:
                err.close()
        wall = time.monotonic() - start
        stats = sim.stats()
    report = merge(work / f"{name}-merged.jsonl", outputs)
    merged_ids = {orjson.loads(line)["custom_id"] for line in (work / f"{name}-merged.jsonl").open("rb")}
    return {"name": name, "n": n, "wall": wall, "stats": stats, "samples": samples,
            "codes": [p.returncode for p in procs], "outage": outage_log,
            "merge": {"written": report.written, "succeeded": report.succeeded, "failed": report.failed,
                      "duplicates": report.duplicates, "all_ids": merged_ids == {f"r{i}" for i in range(n)}},
            "stderr": [(work / f"{name}-{k}.stderr").read_text(errors="replace")[-1500:] for k in range(PROCS)]}


def _analyse(run: dict[str, Any]) -> dict[str, Any]:
    stats = run["stats"]
    series = stats["series"]
    first = next((i for i, row in enumerate(series) if row["requests"]), 0)  # from the first admission
    steady = series[first + HEAD:len(series) - TAIL] if len(series) > first + HEAD + TAIL + 2 else series
    per_s = RPM / 60
    rate = sum(s["requests"] for s in steady) / max(1, len(steady))
    worst = max((s["requests"] for s in steady), default=0)
    n429 = stats["rate_limited"]
    return {"pct": rate / per_s, "worst_pct": worst / per_s, "n429": n429,
            "pct429": n429 / max(1, stats["requests"]), "requests": stats["requests"], "steady_s": len(steady)}


def _overhead(work: Path, quick: bool, url: str) -> dict[str, Any]:
    """Zero-latency throughput of one process, with and without --shared (median of 3)."""
    n = 5_000 if quick else 20_000
    source = write_chat_input(work / "overhead.jsonl", n)
    results: dict[str, list[float]] = {"local": [], "shared": []}
    with simulator(seed=1) as sim:
        for _ in range(1 if quick else 3):
            for mode in ("local", "shared"):
                out = work / f"overhead-{mode}.results.jsonl"
                out.unlink(missing_ok=True)
                summary = work / f"overhead-{mode}.json"
                command = [PYTHON, "-m", "batchchat", "run", str(source), "-o", str(out), "--base-url",
                           sim.base_url, "--rpm", "1e9", "--tpm", "1e13", "--adapt", "off", "--concurrency", "64",
                           "--progress", "off", "--summary-json", str(summary)]
                if mode == "shared":
                    command += ["--shared", url]
                subprocess.run(command, env=client_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=_pin, check=True, timeout=600)
                results[mode].append(orjson.loads(summary.read_bytes())["requests_per_second"])
    local = sorted(results["local"])[len(results["local"]) // 2]
    shared = sorted(results["shared"])[len(results["shared"]) // 2]
    return {"n": n, "local": local, "shared": shared, "ratio": shared / local, "runs": results}


def _plot(runs: dict[str, dict[str, Any]]) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [name for name in ("shared", "alone") if name in runs]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 3.6 * len(shown)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], shown, strict=True):
        run = runs[name]
        samples = run["samples"]
        for k in range(PROCS):
            t, rates = [], []
            for (t0, c0), (t1, c1) in pairwise(samples):
                if t1 > t0:
                    t.append(t1)
                    rates.append((c1[k] - c0[k]) / (t1 - t0))
            ax.plot(t, _smooth(rates), lw=1, label=f"process {k} ({'host A' if k < PROCS // 2 else 'host B'})")
        series = run["stats"]["series"]
        ax.plot([s["t"] + 0.5 for s in series], [s["requests"] for s in series], color="k", lw=1.8,
                label="together (admitted by the server)")
        ax.plot([s["t"] + 0.5 for s in series], [s["429"] for s in series], color="tab:red", lw=1, label="429s/s")
        ax.axhline(RPM / 60, color="k", ls="--", lw=1, label=f"limit {RPM:,} RPM")
        title = ("with --shared: one budget in Redis" if name == "shared"
                 else "without --shared: each process paces alone, told the whole limit")
        ax.set_title(title)
        ax.set_ylabel("requests/s")
        ax.set_ylim(0, RPM / 60 * 1.6)
        ax.legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("seconds (process completions: polled from each output; together: the server's count)")
    fig.suptitle(f"{PROCS} batchchat processes on one key and model, latency 200-2,000 ms")
    fig.tight_layout()
    path = RESULTS_DIR / "fleet.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _smooth(values: list[float], width: int = 4) -> list[float]:
    out = []
    for i in range(len(values)):
        window = values[max(0, i - width + 1):i + 1]
        out.append(sum(window) / len(window))
    return out


def run(quick: bool, work: Path, only: tuple[str, ...] = SCENARIOS) -> Section:
    seconds = 20.0 if quick else 60.0
    outage = (6.0, 11.0) if quick else (15.0, 15.0 + OUTAGE)
    runs: dict[str, dict[str, Any]] = {}
    overhead: dict[str, Any] | None = None
    skipped: list[str] = []
    with redis() as server:
        for name in only:
            if name == "overhead":
                log("fleet overhead: one process, zero latency, with and without --shared")
                overhead = _overhead(work, quick, server.url)
                continue
            if name == "skew" and shutil.which("faketime") is None:
                skipped.append("skew: faketime is not installed (apt-get install faketime)")
                continue
            options: dict[str, Any] = {"url": server.url}
            if name == "alone":
                options["url"] = None
            elif name == "auto":
                options["given"] = False
            elif name == "strict":
                options["kind"] = "strict"
            elif name == "skew":
                options["skew"] = SKEW
            elif name == "outage":
                options["outage"] = outage
                options["server"] = server
            runs[name] = _fleet(name, work, seconds, **options)
            if server.process is None:
                server.start()
    rows, goals, data = [], [], {}
    labels = {"shared": "--shared", "alone": "no --shared (each told the whole limit)",
              "auto": "--shared, no limit given (learned, shared)",
              "strict": "--shared, strict 1-s windows", "skew": f"--shared, one clock {SKEW}",
              "outage": f"--shared, Redis lost {outage[1] - outage[0]:.0f} s"}
    for name, r in runs.items():
        a = _analyse(r)
        m = r["merge"]
        intact = m["all_ids"] and m["written"] == r["n"] and m["failed"] == 0
        data[name] = {**a, "wall": r["wall"], "codes": r["codes"], "merge": m, "outage": r["outage"],
                      "series": r["stats"]["series"], "samples": r["samples"], "stderr": r["stderr"]}
        rows.append([labels[name], r["n"], f"{a['pct']:.1%}", f"{a['worst_pct']:.0%}", a["n429"],
                     f"{a['pct429']:.2%}", r["wall"], " ".join(map(str, r["codes"])),
                     "yes" if intact else "**no**"])
        if name == "shared":
            goals += [("fleet of 4 with --shared: ≥ 97% of the limit", f"{a['pct']:.1%}", a["pct"] >= 0.97),
                      ("fleet of 4 with --shared: 429s < 0.5%", f"{a['n429']} ({a['pct429']:.2%})",
                       a["pct429"] < 0.005),
                      ("fleet of 4: nothing lost or duplicated (merge)", "yes" if intact else "no", intact)]
        elif name == "auto":
            goals += [("auto mode fleet (limits learned and shared): ≥ 97% of the limit, 429s < 0.5%",
                       f"{a['pct']:.1%}, {a['n429']} 429s ({a['pct429']:.2%})",
                       a["pct"] >= 0.97 and a["pct429"] < 0.005)]
        elif name == "strict":
            goals += [("strict windows: ≥ 95% of the limit", f"{a['pct']:.1%}", a["pct"] >= 0.95),
                      ("strict windows: 429s < 0.5%", f"{a['n429']} ({a['pct429']:.2%})", a["pct429"] < 0.005)]
        elif name == "skew":
            goals += [(f"clock skew ({SKEW} on one process): within the limit, 429s < 0.5%",
                       f"worst second {a['worst_pct']:.0%}, {a['pct429']:.2%} 429s", a["pct429"] < 0.005)]
        elif name == "outage":
            ok = intact and a["pct429"] < 0.005 and all(c == 0 for c in r["codes"])
            goals += [("Redis lost mid-run: run completes, nothing lost, no 429 jump",
                       f"exit {' '.join(map(str, r['codes']))}, {a['n429']} 429s, intact: {intact}", ok)]
    if overhead is not None:
        data["overhead"] = overhead
        goals.append(("overhead: one process with --shared ≥ 1/2 of without (zero latency)",
                      f"{overhead['shared']:,.0f} / {overhead['local']:,.0f} req/s = {overhead['ratio']:.2f}",
                      overhead["ratio"] >= 0.5))
    plot = _plot(runs)
    body = [
        f"{PROCS} processes, two \"hosts\" (separate working directories, host B {HOST_B_DELAY:g} s later), "
        f"`--shard K/{PROCS}` of one file each, one key and model, each told the whole limit ({RPM:,} RPM; "
        f"tokens not binding), latency 200-2,000 ms. Steady part: from the first admitted request, the first "
        f"{HEAD} s and the last {TAIL} s cut. "
        "\"Intact\": after `batchchat merge` of the four outputs, every id once and none failed.", "",
        table(["scenario", "requests", "admitted, % of limit", "worst second", "429s", "429 %", "wall s",
               "exit codes", "intact"], rows), "",
    ]
    for r in runs.values():
        if r["outage"]:
            body += [f"Outage: {'; '.join(r['outage'])}.", ""]
    if overhead is not None:
        body += [f"Overhead: one process, {overhead['n']:,} requests, zero-latency server, `--adapt off` with limits "
                 f"far above reach (every request reserves through its store): {overhead['local']:,.0f} req/s "
                 f"without `--shared`, {overhead['shared']:,.0f} with it ({overhead['ratio']:.2f}x).", ""]
    if skipped:
        body += ["Skipped: " + "; ".join(skipped) + ".", ""]
    if plot:
        body += [f"![fleet]({plot})", ""]
    body.append("Command: `python -m benchmarks.bench_fleet" + (" --quick" if quick else "") + "`.")
    return Section("10. A fleet on one key (--shared)", "\n".join(body), goals, data)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 s fleets instead of 60 s")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
    args = parser.parse_args()
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with workdir() as work:
        section = run(args.quick, work, only)
    text = section.markdown()
    (RESULTS_DIR / "fleet.md").write_text(text)
    (RESULTS_DIR / "fleet.json").write_text(orjson.dumps(section.data, option=orjson.OPT_INDENT_2).decode())
    print(text)
    for goal, value, ok in section.goals:
        log(f"{verdict(ok)}: {goal}: {value}")


if __name__ == "__main__":
    main()
