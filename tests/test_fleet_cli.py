"""A fleet through the real CLI: processes on one key share one budget through a real redis-server (`--shared`),
against the real simulator over loopback; Redis lost mid-run, Redis never there (exit 8, or `--shared-fallback
local`), `batchchat status --shared`, `batchchat merge`, and the API key never written to Redis."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import redis
from cli_process import PLANTED_KEY, chat_jobs, cli, cli_env, finish, parse_output, run_args, start, write_jsonl
from redis_server import RedisServer, free_port

from batchchat.simulator import Simulator

LIMIT_RPM = 3_000  # 50 requests/s
MODEL = "gpt-4o-mini"


def _shared_run(sim: Simulator, src: Path, out: Path, url: str, *extra: str) -> list[str | Path]:
    return run_args(sim.base_url, src, out, "--rpm", str(LIMIT_RPM), "--concurrency", "32", "--shared", url, *extra)


def _redis_holds(url: str, *needles: str) -> list[str]:
    """Every key or value in Redis (strings, hashes, sorted sets) that contains one of `needles`."""
    client = redis.Redis.from_url(url)
    found = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"hash":
                values = [*client.hkeys(key), *client.hvals(key)]
            elif kind == b"zset":
                values = client.zrange(key, 0, -1)
            elif kind == b"string":
                values = [client.get(key) or b""]
            else:
                values = []
            for blob in [key, *values]:
                found += [f"{key!r}: {needle}" for needle in needles if needle.encode() in blob]
    finally:
        client.close()
    return found


def test_two_processes_on_one_key_hold_the_servers_limit(
        tmp_path: Path, simulator: Callable[..., Simulator], redis_url: str) -> None:
    sim = simulator(rpm=LIMIT_RPM, latency_ms=20)
    src = write_jsonl(tmp_path / "job.jsonl", chat_jobs(160))
    outs = [tmp_path / f"part{k}.jsonl" for k in range(2)]
    # --adapt off: no header sync either, so only the shared budget keeps the two from sending twice the limit
    procs = [start(*_shared_run(sim, src, outs[k], redis_url, "--shard", f"{k}/2", "--adapt", "off"), cwd=tmp_path)
             for k in range(2)]
    listed = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        status = cli("status", "--shared", redis_url, "--model", MODEL, "--base-url", sim.base_url)
        assert status.returncode == 0, status.stderr
        if "2 processes" in status.stdout:
            listed = status.stdout
            break
        time.sleep(0.2)
    results = [finish(p, timeout=60) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], results
    stats = sim.stats()
    # one budget for both: the server's limit held with no 429 (without --shared the same two drew 11-17 429s in
    # about 175 requests, admitted at 60-72 requests/s: each paced at the whole limit)
    assert stats["rate_limited"] == 0 and stats["requests"] == 160
    steady = stats["series"][1:-1]
    rate = sum(row["requests"] for row in steady) / len(steady)
    assert rate <= LIMIT_RPM / 60 * 1.05, stats["series"]
    # status named the budget by its model and listed both processes with what each spent
    assert listed.startswith(f"{MODEL}: 2 processes"), listed
    assert "shard=0/2" in listed and "shard=1/2" in listed and "output=part0.jsonl" in listed
    # merged: every id once
    merged = cli("merge", tmp_path / "all.jsonl", *outs)
    assert merged.returncode == 0 and "160 ids (160 succeeded, 0 failed)" in merged.stdout
    assert sorted(line["custom_id"] for line in parse_output(tmp_path / "all.jsonl")) == sorted(
        f"r{i}" for i in range(160))
    # Redis holds the budget under a hash: neither the key nor the model nor the endpoint
    assert _redis_holds(redis_url, PLANTED_KEY, PLANTED_KEY[-12:], MODEL, sim.base_url) == []


def test_redis_lost_mid_run_pauses_dispatch_and_the_run_completes(
        tmp_path: Path, simulator: Callable[..., Simulator], redis_url: str, redis_server: RedisServer) -> None:
    sim = simulator(rpm=LIMIT_RPM, latency_ms=20)
    src = write_jsonl(tmp_path / "job.jsonl", chat_jobs(200))
    out = tmp_path / "out.jsonl"
    proc = start(*_shared_run(sim, src, out, redis_url, "--shared-timeout", "30"), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while sim.stats()["requests"] < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        redis_server.stop()
        time.sleep(0.3)  # in-flight answers land; nothing new may go out
        sent_at_stop = sim.stats()["requests"]
        time.sleep(1.5)
        assert sim.stats()["requests"] == sent_at_stop  # paused: nothing sent unbudgeted
    finally:
        redis_server.start()
    code, _, err = finish(proc, timeout=60)
    assert code == 0, err
    assert "dispatch paused" in err and "is back after" in err
    stats = sim.stats()
    assert stats["rate_limited"] == 0 and stats["requests"] == 200  # no burst when it came back empty
    assert sorted(line["custom_id"] for line in parse_output(out)) == sorted(f"r{i}" for i in range(200))


def _dead_url() -> str:
    port = free_port()
    with socket.socket() as probe:  # nothing listens there
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return f"redis://127.0.0.1:{port}/0"


def test_redis_unreachable_past_the_timeout_stops_with_exit_8(tmp_path: Path, sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "job.jsonl", chat_jobs(5))
    out = tmp_path / "out.jsonl"
    done = cli(*run_args(sim.base_url, src, out, "--rpm", "600", "--shared", _dead_url(), "--shared-timeout",
                         "0.5"), timeout=60)
    assert done.returncode == 8, done.stderr
    assert "dispatch paused" in done.stderr and "unreachable for 0.5 s (--shared-timeout)" in done.stderr
    assert sim.stats()["requests"] == 0  # nothing sent without the shared budget
    assert "Traceback" not in done.stderr and PLANTED_KEY not in done.stderr + done.stdout


def test_shared_fallback_local_goes_on_and_says_so_loudly(tmp_path: Path, sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "job.jsonl", chat_jobs(5))
    out = tmp_path / "out.jsonl"
    done = cli(*run_args(sim.base_url, src, out, "--rpm", "600", "--shared", _dead_url(), "--shared-timeout",
                         "0.2", "--shared-fallback", "local"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stderr and "falling back to LOCAL budgets" in done.stderr
    assert "MAY EXCEED THE LIMIT" in done.stderr and len(parse_output(out)) == 5


def test_a_bad_shared_url_or_fallback_is_a_usage_error(tmp_path: Path, sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "job.jsonl", chat_jobs(1))
    for extra, message in ((("--shared", "http://user:pw@host:6379"), "--shared must be a Redis URL"),
                           (("--shared", "redis://127.0.0.1:1/0", "--shared-fallback", "pray"), "--shared-fallback")):
        done = cli(*run_args(sim.base_url, src, tmp_path / "o.jsonl", *extra), env=cli_env())
        assert done.returncode == 2 and message in done.stderr and "pw" not in done.stderr
    assert sim.stats()["requests"] == 0
