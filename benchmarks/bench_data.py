"""Data: the request cache, a table input and export (#24).

- cache, by the simulator's count: a second job that shares half its requests with a first sends the other half;
- cache look-up on a 1M-entry file: µs per request (`RunCache.serve`: the key, the SQLite look-up, the result),
  hits and misses, in a process of its own (its peak RSS), and the file's size;
- what the cache costs on the per-request path: client CPU per request of the code before the cache (the merge
  base with main, as a snapshot), of this code without `--cache`, and with it (empty: every answer stored; full:
  every answer from it), interleaved rounds against a zero-latency simulator, medians;
- a 1,000,000-row Parquet input through the whole pipeline (peak RSS of the run, sampled, and of the child that
  spools the table), then the 1M-line output exported to Parquet (wall time).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    API_KEY,
    PYTHON,
    REPO,
    Section,
    client_env,
    log,
    run_process,
    simulator,
    table,
    write_chat_input,
)

RUN_CODE = """
import json, resource, sys, time
spec = json.loads(sys.argv[1])
if spec.get("code"):
    sys.path.insert(0, spec["code"])  # the code before the cache, ahead of the worktree (the process's cwd)
import batchchat
r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
s = batchchat.run(spec["input"], spec["output"], base_url=spec["base_url"], api_key=spec["key"], progress="off",
                  concurrency=64, **spec["extra"])
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, "wall": time.perf_counter() - t0,
                  "ok": s.succeeded, "cached": getattr(s, "cached", 0), "code": batchchat.__file__}))
"""

LOOKUP_CODE = """
import json, random, resource, sys, time
from pathlib import Path
from batchchat.cache.hook import RunCache
from batchchat.config.settings import EndpointConfig
from batchchat.input.parse import Job
path, n, probes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = RunCache(Path(path), EndpointConfig(base_url="http://127.0.0.1:8000/v1"), print)
def job(i):
    return Job(f"r{i}", "/v1/chat/completions", {"model": "gpt-4o-mini", "max_tokens": 16,
               "messages": [{"role": "user", "content": f"hello hello hello hello hello {i}"}]}, i)
rng = random.Random(7)
hits = [job(rng.randrange(n)) for _ in range(probes)]
misses = [job(n + rng.randrange(n)) for _ in range(probes)]
import sqlite3
ref = sqlite3.connect(":memory:")
ref.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
ref.execute("INSERT INTO t VALUES (1, 2)")
t = time.perf_counter()
for j in hits:
    ref.execute("SELECT v FROM t WHERE id = ?", (1,)).fetchone()
out = {"reference_us": (time.perf_counter() - t) / len(hits) * 1e6}  # the machine's speed: ~1.5 µs when quiet
for name, jobs in (("hit", hits), ("miss", misses)):
    t = time.perf_counter()
    found = sum(cache.serve(j) is not None for j in jobs)
    out[name] = (time.perf_counter() - t) / len(jobs) * 1e6
    out[name + "_found"] = found
key_t = time.perf_counter()
for j in hits:
    cache.cache.key("http://127.0.0.1:8000/v1/chat/completions", j.body)
out["key_us"] = (time.perf_counter() - key_t) / len(hits) * 1e6
out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _answer(i: int) -> bytes:
    """A simulator-sized chat answer (about 600 bytes)."""
    words = " ".join(["lorem", "ipsum", "dolor", "sit", "amet"] * 6)
    return orjson.dumps({"id": f"chatcmpl-{i:024d}", "object": "chat.completion", "created": 1796700000,
                         "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {
                             "role": "assistant", "content": words, "refusal": None}, "logprobs": None,
                             "finish_reason": "stop"}], "usage": {"prompt_tokens": 13, "completion_tokens": 30,
                                                                   "total_tokens": 43},
                         "system_fingerprint": "fp_simulator"})


def build_cache(path: Path, n: int) -> float:
    """A cache of `n` answers to the requests LOOKUP_CODE asks for; the seconds it took."""
    import time

    from batchchat.cache.store import CachedAnswer, RequestCache, request_key

    url = "http://127.0.0.1:8000/v1/chat/completions"
    started = time.perf_counter()
    with RequestCache(path) as cache:
        for first in range(0, n, 20_000):
            cache.store_many([(request_key(url, {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [
                {"role": "user", "content": f"hello hello hello hello hello {i}"}]}), "/v1/chat/completions",
                "gpt-4o-mini", CachedAnswer(_answer(i), 200, f"req_{i}", {"prompt_tokens": 13}))
                for i in range(first, min(n, first + 20_000))])
    return time.perf_counter() - started


BUILD_CODE = """
import sys
from pathlib import Path
from benchmarks.bench_data import build_cache
print(build_cache(Path(sys.argv[1]), int(sys.argv[2])))
"""


def lookup(work: Path, n: int) -> dict[str, Any]:
    path = work / "lookup.sqlite"  # built in a child: a process forked from a large one starts with its peak RSS
    build_s = float(run_process([PYTHON, "-c", BUILD_CODE, str(path), str(n)], timeout=1800).stdout.split()[-1])
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    run = run_process([PYTHON, "-c", LOOKUP_CODE, str(path), str(n), "20000"], timeout=600)
    result = run.json()
    result |= {"entries": n, "build_s": build_s, "file_mb": size / 1e6}
    path.unlink()
    return result


def half_shared(work: Path, n: int) -> dict[str, int]:
    """Job one: n requests; job two: n requests, half of them job one's (under other ids): what each sent."""
    first = write_chat_input(work / "first.jsonl", n)
    lines = [orjson.loads(line) for line in first.read_bytes().splitlines()]
    second = work / "second.jsonl"
    shared = [{**line, "custom_id": f"again{i}"} for i, line in enumerate(lines[n // 2:])]
    fresh = [{**line, "custom_id": f"new{i}", "body": {**line["body"], "max_tokens": 17}}
             for i, line in enumerate(lines[: n - len(shared)])]
    second.write_bytes(b"".join(orjson.dumps(x, option=orjson.OPT_APPEND_NEWLINE) for x in shared + fresh))
    cache = work / "half.sqlite"
    sent = {}
    with simulator(seed=13) as sim:
        for name, src in (("first", first), ("second", second)):
            before = sim.stats()["requests"]
            spec = {"input": str(src), "output": str(work / f"{name}.out"), "base_url": sim.base_url,
                    "key": API_KEY, "extra": {"cache": str(cache)}}
            run = run_process([PYTHON, "-c", RUN_CODE, json.dumps(spec)], timeout=600, env=client_env())
            sent[name] = sim.stats()["requests"] - before
            sent[name + "_cached"] = run.json()["cached"]
    sent["shared"] = len(shared)
    return sent


def base_snapshot(work: Path) -> Path | None:
    """The code before the cache (the merge base with main) as a directory to put on PYTHONPATH."""
    try:
        base = subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"], capture_output=True, text=True,
                              check=True).stdout.strip()
        target = work / "base"
        target.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", base, "batchchat"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        return target
    except (subprocess.CalledProcessError, OSError):
        return None


def cpu_per_request(work: Path, n: int, rounds: int) -> dict[str, float]:
    """Median client CPU µs per request of each variant, interleaved over `rounds` rounds."""
    src = write_chat_input(work / "cpu.jsonl", n)
    base = base_snapshot(work)
    cache = work / "cpu.sqlite"
    variants: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
        "before the cache (merge base)": ({}, {"code": str(base)} if base else {}),
        "no --cache": ({}, {}),
        "--cache, empty (all stored)": ({"cache": "EMPTY"}, {}),
        "--cache, full (all hits)": ({"cache": str(cache)}, {}),
    }
    if base is None:
        del variants["before the cache (merge base)"]
    samples: dict[str, list[float]] = {name: [] for name in variants}
    micro = line_cost(base)
    with simulator(seed=11) as sim:
        warm = {"input": str(src), "output": str(work / "warm.out"), "base_url": sim.base_url, "key": API_KEY,
                "extra": {"cache": str(cache)}}
        run_process([PYTHON, "-c", RUN_CODE, json.dumps(warm)], timeout=600, env=client_env())
        for r in range(rounds):
            for name, (extra, env) in variants.items():
                out = work / "cpu.out"
                out.unlink(missing_ok=True)
                extra = dict(extra)
                if extra.get("cache") == "EMPTY":
                    empty = work / f"empty{r}.sqlite"
                    extra["cache"] = str(empty)
                spec = {"input": str(src), "output": str(out), "base_url": sim.base_url, "key": API_KEY,
                        "extra": extra, **env}
                got = run_process([PYTHON, "-c", RUN_CODE, json.dumps(spec)], timeout=600, env=client_env()).json()
                assert got["ok"] == n, got
                if name.startswith("before"):
                    assert got["code"].startswith(str(base)), got
                samples[name].append(got["cpu"] / n * 1e6)
    result = {name: statistics.median(values) for name, values in samples.items()}
    result |= {f"line ns {name}": ns for name, ns in micro.items()}
    return result


MICRO_CODE = """
import json, sys, time
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
from batchchat.output.lines import Result, encode_result
body = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}'
usage = {"prompt_tokens": 13, "completion_tokens": 30, "total_tokens": 43}
best = []
for _ in range(5):
    t = time.perf_counter()
    for i in range(200_000):
        encode_result(Result("r1", i, 200, body, "req_1", attempts=1, latency=0.01, usage=usage,
                             fingerprint="0123456789abcdef", cost_usd=0.0001), "batch_req_1")
    best.append((time.perf_counter() - t) / 200_000 * 1e9)
print(json.dumps({"ns": min(best), "code": Result.__module__ and sys.modules["batchchat"].__file__}))
"""


def line_cost(base: Path | None) -> dict[str, float]:
    """ns to make and encode one result line (the per-request step the cache added a field and a test to), in the
    code before the cache and in this code, alternated three times; the best of each."""
    found: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(3):
        for name, code in (("before", str(base) if base else None), ("now", "")):
            if code is None:
                continue
            found[name].append(run_process([PYTHON, "-c", MICRO_CODE, code], timeout=300).json()["ns"])
    return {name: min(values) for name, values in found.items() if values}


def write_parquet(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.string())])
    rng = random.Random(3)
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, rows, 100_000):
            ids = range(first, min(rows, first + 100_000))
            writer.write_table(pa.table({
                "id": [f"review-{i}" for i in ids],
                "text": [f"Review {i}: the product {rng.choice(['works', 'broke', 'is fine'])}, I'd say." for i in ids],
                "label": [rng.choice(["pos", "neg"]) for _ in ids]}, schema=schema))


SPOOL_CODE = """
import resource, sys, time
from pathlib import Path
from batchchat.config.settings import TableOptions
from batchchat.input.table_spool import write_spool
t = time.perf_counter()
n = write_spool(Path(sys.argv[1]), "in", "parquet", TableOptions(template="Classify: {{ text }}", id_column="id"),
                None, Path(sys.argv[2]))
print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

RUN_CLI_CODE = """
import atexit, resource, sys
atexit.register(lambda: print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))
from batchchat.cli import main
sys.argv = ["batchchat", *sys.argv[1:]]
main()
"""

EXPORT_CODE = """
import resource, sys, time
from pathlib import Path
from batchchat.results.export import export
t = time.perf_counter()
r = export(Path(sys.argv[1]), Path(sys.argv[2]))
print(r.rows, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def parquet_pipeline(work: Path, rows: int) -> dict[str, Any]:
    src = work / "reviews.parquet"
    run_process([PYTHON, "-c", "import sys; from pathlib import Path; from benchmarks.bench_data import write_parquet; "
                 "write_parquet(Path(sys.argv[1]), int(sys.argv[2]))", str(src), str(rows)], timeout=900)
    spool = run_process([PYTHON, "-c", SPOOL_CODE, str(src), str(work / "spool.jsonl")], timeout=900)
    spooled, spool_s, spool_peak = spool.stdout.split()
    (work / "spool.jsonl").unlink()
    out = work / "reviews.results.jsonl"
    with simulator(seed=5) as sim:
        run = run_process([PYTHON, "-c", RUN_CLI_CODE, "run", str(src), "-o", str(out), "--base-url", sim.base_url,
                           "--model", "gpt-4o-mini", "--max-tokens", "16", "--template", "Classify: {{ text }}",
                           "--id-column", "id", "--progress", "off", "-c", "64", "--rpm", "100000000", "--tpm",
                           "100000000000"], timeout=3600, sample=0.1, env=client_env())
    assert run.returncode == 0, run.stderr[-2000:]
    peak_sampled = max((rss for _, rss, _ in run.samples), default=float("nan"))
    own_peak = float(run.stderr.rsplit("MAXRSS_KB ", 1)[1].split()[0]) / 1024  # without its spool child
    exported = run_process([PYTHON, "-c", EXPORT_CODE, str(out), str(work / "flat.parquet")], timeout=900)
    export_rows, export_s, export_peak = exported.stdout.split()
    result = {"rows": rows, "parquet_mb": src.stat().st_size / 1e6, "spool_rows": int(spooled),
              "spool_s": float(spool_s), "spool_peak_mb": float(spool_peak), "run_wall_s": run.wall,
              "run_peak_mb": own_peak, "run_tree_peak_mb": run.maxrss_mb, "run_peak_sampled_mb": peak_sampled,
              "output_mb": out.stat().st_size / 1e6,
              "export_rows": int(export_rows), "export_s": float(export_s), "export_peak_mb": float(export_peak),
              "export_mb": (work / "flat.parquet").stat().st_size / 1e6}
    for f in (src, out, work / "flat.parquet"):
        f.unlink(missing_ok=True)
    return result


def run(quick: bool, work: Path) -> Section:
    n_half = 2_000 if quick else 10_000
    entries = 100_000 if quick else int(os.environ.get("BENCH_CACHE_ENTRIES", 1_000_000))
    cpu_n, rounds = (5_000, 1) if quick else (20_000, 3)
    rows = 100_000 if quick else int(os.environ.get("BENCH_PARQUET_ROWS", 1_000_000))
    log(f"data: a second job sharing half of {n_half:,} requests")
    half = half_shared(work, n_half)
    log(f"data: cache look-up on {entries:,} entries")
    looked = lookup(work, entries)
    log(f"data: client CPU per request, {rounds} rounds of {cpu_n:,}")
    cpu = cpu_per_request(work, cpu_n, rounds)
    log(f"data: a {rows:,}-row Parquet input through the pipeline, then export")
    pipe = parquet_pipeline(work, rows)
    base = cpu.get("before the cache (merge base)")
    cpu_rows = [[name, us, f"{us / base:.3f}x" if base else "-"] for name, us in cpu.items()
                if not name.startswith("line ns")]
    micro = (f"Making and encoding one result line (`Result` + `encode_result`, 200,000 lines, best of 3 "
             f"alternated processes): {cpu.get('line ns before', float('nan')):.0f} ns before the cache, "
             f"{cpu.get('line ns now', float('nan')):.0f} ns now.")
    body = "\n".join([
        f"**Cache, two jobs** ({n_half:,} requests each, the second sharing {half['shared']:,} with the first under "
        f"other ids, one cache file): the simulator received {half['first']:,} requests from the first and "
        f"{half['second']:,} from the second, which wrote {half['second_cached']:,} lines from the cache.", "",
        f"**Cache look-up** on {looked['entries']:,} entries ({looked['file_mb']:,.0f} MB on disk, built in "
        f"{looked['build_s']:.0f} s, {looked['build_s'] / looked['entries'] * 1e6:.0f} µs an answer stored): "
        f"`RunCache.serve` (key, SQLite look-up, result line) {looked['hit']:.1f} µs a "
        f"hit, {looked['miss']:.1f} µs a miss (of which the key: {looked['key_us']:.1f} µs), 20,000 random probes "
        f"each; peak RSS of the probing process {looked['maxrss_mb']:.0f} MB. The machine's speed at that moment: "
        f"the same call on a one-row in-memory table took {looked['reference_us']:.1f} µs (about 1.5 on a quiet "
        "core).", "",
        f"**Client CPU per request** (zero-latency simulator, {cpu_n:,} requests, median of {rounds}):", "",
        table(["client", "CPU µs/request", "vs before"], cpu_rows), "", micro, "",
        f"**{pipe['rows']:,}-row Parquet input** ({pipe['parquet_mb']:.0f} MB, row groups of 100,000; "
        "`--template 'Classify: {{ text }}' --id-column id`): spooled to JSONL by a child process in "
        f"{pipe['spool_s']:.1f} s at a peak RSS of {pipe['spool_peak_mb']:.0f} MB; the whole run "
        f"{pipe['run_wall_s']:.0f} s, peak RSS of the run's process {pipe['run_peak_mb']:.0f} MB (its own "
        f"getrusage; sampled every 0.1 s: {pipe['run_peak_sampled_mb']:.0f} MB). "
        f"Its {pipe['output_mb']:,.0f} MB output exported to Parquet: "
        f"{pipe['export_rows']:,} rows in {pipe['export_s']:.1f} s ({pipe['export_mb']:.0f} MB, peak RSS "
        f"{pipe['export_peak_mb']:.0f} MB).", "",
        "Command: `python -m benchmarks.run_all --only data`."])
    hit_us = looked["hit"]
    goals = [
        ("cache: a second job sharing half its requests sends exactly the other half (simulator's count)",
         f"{half['second']:,} of {n_half:,} sent", half["second"] == n_half - half["shared"]),
        (f"cache look-up <= 20 µs per request on a {looked['entries']:,}-entry cache",
         f"{hit_us:.1f} µs hit, {looked['miss']:.1f} µs miss", max(hit_us, looked["miss"]) <= 20),
        (f"{pipe['rows']:,}-row Parquet input: peak memory <= 150 MB",
         f"run {pipe['run_peak_mb']:.0f} MB, spool child {pipe['spool_peak_mb']:.0f} MB",
         max(pipe["run_peak_mb"], pipe["spool_peak_mb"]) <= 150),
        (f"export of a {pipe['export_rows']:,}-line output to Parquet <= 30 s", f"{pipe['export_s']:.1f} s",
         pipe["export_s"] <= 30),
    ]
    if base:
        extra = cpu["no --cache"] / base - 1
        goals.append(("without --cache the per-request path costs what it did (within 3%)", f"{extra:+.1%}",
                      abs(extra) <= 0.03))
    return Section("Data: request cache, tables in and out (#24)", body, goals,
                   {"half": half, "lookup": looked, "cpu_us": cpu, "parquet": pipe})
