"""The request cache (#24 item 2), judged by the simulator's own count of requests it received.

The promises: a request the cache holds is never sent (any run, any file, any process on the host), a request is
never answered with another request's answer, every new success is stored, and a cached line costs and reserves
nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cli_process import cli, cli_env, finish, run_args, running
from helpers import chat_lines, read_output, run_options, write_jobs
from hypothesis import given
from hypothesis import strategies as st

import batchchat
from batchchat.cache import CachedAnswer, RequestCache, request_key
from batchchat.errors import UsageError
from batchchat.simulator import Simulator


def sent(sim: Simulator) -> int:
    return sim.stats()["requests"]


def test_lookup_and_store_by_url_and_body(tmp_path: Path) -> None:
    with RequestCache(tmp_path / "c.sqlite") as cache:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        assert cache.lookup("http://h/v1/chat/completions", body) is None
        cache.store("http://h/v1/chat/completions", body, CachedAnswer(b'{"a":1}', 200, "req_1", {"prompt_tokens": 3}))
        reordered = {"max_tokens": 5, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
        hit = cache.lookup("http://h/v1/chat/completions", reordered)  # key order does not matter
        assert hit is not None and (hit.body, hit.request_id, hit.usage) == (b'{"a":1}', "req_1", {"prompt_tokens": 3})
        assert cache.lookup("http://other/v1/chat/completions", body) is None  # another endpoint
        assert cache.lookup("http://h/v1/chat/completions", {**body, "max_tokens": 6}) is None
        assert cache.stats().entries == 1


def test_two_keys_sharing_a_rowid_never_share_an_answer(tmp_path: Path) -> None:
    first, second = b"\x01" * 8 + b"\x02" * 8, b"\x01" * 8 + b"\x03" * 8  # same 64-bit rowid, other check bits
    with RequestCache(tmp_path / "c.sqlite") as cache:
        cache.store_many([(first, "/v1/chat/completions", "m", CachedAnswer(b"{}"))])
        cache.store_many([(second, "/v1/chat/completions", "m", CachedAnswer(b'{"other":1}'))])
        assert cache.lookup_key(first) is not None and cache.lookup_key(first).body == b"{}"  # type: ignore[union-attr]
        assert cache.lookup_key(second) is None


def test_a_second_job_sharing_half_its_requests_sends_exactly_the_other_half(tmp_path: Path, sim: Simulator) -> None:
    cache = tmp_path / "answers.sqlite"
    first = write_jobs(tmp_path / "first.jsonl", chat_lines(40, prefix="a"))
    shared = chat_lines(40, prefix="a")[20:]  # the same 20 requests under other ids, in another file
    second = write_jobs(tmp_path / "second.jsonl", [{**line, "custom_id": f"b{i}"} for i, line in enumerate(shared)]
                        + chat_lines(20, prefix="fresh", max_tokens=9))
    done = cli(*run_args(sim.base_url, first, tmp_path / "first.out", "--cache", cache), env=cli_env())
    assert done.returncode == 0, done.stderr
    assert sent(sim) == 40
    done = cli(*run_args(sim.base_url, second, tmp_path / "second.out", "--cache", cache), env=cli_env())
    assert done.returncode == 0, done.stderr
    assert sent(sim) == 40 + 20  # exactly the 20 the cache did not hold
    assert "40 succeeded (20 from the cache, not sent)" in done.stdout
    lines = {line["custom_id"]: line for line in read_output(tmp_path / "second.out")}
    earlier = {line["custom_id"]: line for line in read_output(tmp_path / "first.out")}
    for i in range(20):
        line = lines[f"b{i}"]
        assert line["cached"] is True and line["cost_usd"] == 0.0 and line["attempts"] == 0
        assert line["response"]["body"] == earlier[f"a{20 + i}"]["response"]["body"]
    assert not any(lines[f"fresh{i}"].get("cached") for i in range(20))
    with RequestCache(cache) as held:
        assert held.stats().entries == 60  # every new success stored
    again = cli(*run_args(sim.base_url, second, tmp_path / "second.out", "--cache", cache), env=cli_env())
    assert again.returncode == 0 and "40 already done" in again.stdout  # cached lines resume as done
    assert sent(sim) == 60


def test_the_cache_shared_by_two_processes_at_once(tmp_path: Path, simulator: Any) -> None:
    sim = simulator(latency_ms=5)
    cache = tmp_path / "answers.sqlite"
    left = write_jobs(tmp_path / "left.jsonl", chat_lines(300, prefix="x")[:200])
    right = write_jobs(tmp_path / "right.jsonl", chat_lines(300, prefix="x")[100:])  # 100 requests in common
    with running(*run_args(sim.base_url, left, tmp_path / "left.out", "--cache", cache, "-c", "8"),
                 env=cli_env()) as one, \
         running(*run_args(sim.base_url, right, tmp_path / "right.out", "--cache", cache, "-c", "8"),
                 env=cli_env()) as two:
        for proc in (one, two):
            code, _out, err = finish(proc, timeout=120)
            assert code == 0, err
            assert "warning: the cache" not in err
    assert 300 <= sent(sim) <= 400  # the common 100 went once or twice, depending on who was first
    with RequestCache(cache) as held:
        assert held.stats().entries == 300
        assert sqlite3.connect(cache).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    before = sent(sim)
    union = write_jobs(tmp_path / "all.jsonl", chat_lines(300, prefix="x"))
    done = cli(*run_args(sim.base_url, union, tmp_path / "all.out", "--cache", cache), env=cli_env())
    assert done.returncode == 0 and sent(sim) == before  # every one of them from the cache


def test_a_cached_line_reserves_nothing_from_the_spending_cap(tmp_path: Path, sim: Simulator) -> None:
    cache = tmp_path / "c.sqlite"
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(30))
    assert batchchat.run(src, tmp_path / "a.out", **run_options(sim, cache=cache)).succeeded == 30
    # a cap below one request's worst case: only cached lines can be written, and they all are
    summary = batchchat.run(src, tmp_path / "b.out", **run_options(sim, cache=cache, max_cost=0.0000001))
    assert (summary.succeeded, summary.cached, summary.exit_code) == (30, 30, 0)
    assert sent(sim) == 30
    assert summary.cost is not None and summary.cost["spent_usd"] == 0


def test_failures_are_not_cached_and_batch_refuses_the_flag(tmp_path: Path, simulator: Any) -> None:
    sim = simulator(fault_rates={"500": 1.0})
    cache = tmp_path / "c.sqlite"
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(5))
    summary = batchchat.run(src, tmp_path / "a.out", **run_options(sim, cache=cache, max_attempts=1))
    assert summary.failed == 5
    with RequestCache(cache) as held:
        assert held.stats().entries == 0
    with pytest.raises(UsageError, match="--cache works with --via online only"):
        batchchat.settings_for(src, cache=cache, via="batch")


@given(st.lists(st.integers(0, 30), min_size=1, max_size=25, unique=True), st.data())
def test_never_sends_a_request_it_holds_nor_serves_another_requests_answer(
        tmp_path_factory: Any, sim: Simulator, numbers: list[int], data: Any) -> None:
    work = tmp_path_factory.mktemp("cache")
    cache = work / "c.sqlite"
    requests = [{"model": "gpt-4o-mini", "max_tokens": 4 + n % 5,
                 "messages": [{"role": "user", "content": f"question {n}"}]} for n in numbers]
    warm = data.draw(st.lists(st.sampled_from(range(len(requests))), unique=True), label="answered first")
    if warm:
        write_jobs(work / "warm.jsonl", [{"custom_id": f"w{i}", **requests[i]} for i in warm])
        batchchat.run(work / "warm.jsonl", work / "warm.out", **run_options(sim, cache=cache))
    answers = {line["custom_id"]: line["response"]["body"] for line in read_output(work / "warm.out")} if warm else {}
    before = sent(sim)
    write_jobs(work / "all.jsonl", [{"custom_id": f"q{i}", **body} for i, body in enumerate(requests)])
    summary = batchchat.run(work / "all.jsonl", work / "all.out", **run_options(sim, cache=cache))
    assert summary.succeeded == len(requests)
    assert sent(sim) - before == len(requests) - len(warm)  # by the simulator's count
    for line in read_output(work / "all.out"):
        i = int(line["custom_id"][1:])
        if i in warm:
            assert line["cached"] is True
            assert line["response"]["body"] == answers[f"w{i}"]  # the answer of this very request
        else:
            assert "cached" not in line
            assert line["response"]["body"]["usage"]["completion_tokens"] <= requests[i]["max_tokens"]


def test_cache_cli_stats_and_prune(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with RequestCache(path) as cache:
        cache.store_many([(request_key("u", {"n": i}), "/v1/chat/completions", "gpt-4o-mini", CachedAnswer(b"{}"))
                          for i in range(50)])
        cache._writer.execute("UPDATE answers SET stored_at = stored_at - 40 * 86400 WHERE rowid % 2 = 0")
    stats = cli("cache", "stats", path)
    assert stats.returncode == 0 and "50 answers" in stats.stdout and "gpt-4o-mini" in stats.stdout
    pruned = cli("cache", "prune", "--older-than", "30d", path)
    assert pruned.returncode == 0, pruned.stderr
    with RequestCache(path) as cache:
        left = cache.stats().entries
        kept = [i for i in range(50) if cache.lookup("u", {"n": i}) is not None]
    assert f"removed {50 - left:,} answers" in pruned.stdout and 0 < left < 50
    assert len(kept) == left  # a pruned answer is not found any more, a kept one is
    missing = cli("cache", "stats", tmp_path / "nope.sqlite")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = cli("cache", "prune", "--older-than", "soon", path)
    assert bad.returncode == 2 and "--older-than must look like 30d" in bad.stderr


def test_a_cache_that_is_not_sqlite_is_refused_before_anything_is_sent(tmp_path: Path, sim: Simulator) -> None:
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"this is not a database, just some bytes" * 100)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(3))
    done = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl", "--cache", bad), env=cli_env())
    assert done.returncode == 2 and f"cache {bad} cannot be used" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and sent(sim) == 0
