"""`--shard K/N` (a job split over processes or hosts) and `batchchat merge` (their outputs joined, one line per id),
against the real simulator over loopback."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import orjson
import pytest
from helpers import chat_lines, read_output, run_options, write_jobs

import batchchat
from batchchat.errors import UsageError
from batchchat.input.shard import Shard
from batchchat.output.merge import merge
from batchchat.simulator import Simulator


def test_shard_parse_and_ownership() -> None:
    shard = Shard.parse(" 1 / 3 ")
    assert (shard.index, shard.count, str(shard), shard.suffix) == (1, 3, "1/3", ".shard1-of-3")
    assert [n for n in range(1, 10) if shard.owns(n)] == [2, 5, 8]  # line numbers from 1: positions 1, 4, 7
    for bad in ("3/3", "-1/2", "1/0", "a/b", "1", "1/2/3", ""):
        with pytest.raises(UsageError, match="--shard"):
            Shard.parse(bad)


def test_a_shard_default_output_name_and_option_sources(tmp_path: Path) -> None:
    settings = batchchat.settings_for(tmp_path / "big.jsonl", shard="2/4")
    assert settings.output_path() == tmp_path / "big.shard2-of-4.results.jsonl"
    config = tmp_path / "fleet.toml"
    config.write_text('shard = "0/2"\nshared = "redis://127.0.0.1:6379/0"\nshared-timeout = 5\n'
                      'shared-fallback = "local"\n')
    from batchchat.config.load import build_settings

    loaded = build_settings({"input": "x.jsonl"}, environ={}, config_file=config)
    assert (str(loaded.shard), loaded.shared, loaded.shared_timeout, loaded.shared_fallback) == (
        "0/2", "redis://127.0.0.1:6379/0", 5.0, "local")
    from_env = build_settings({"input": "x.jsonl"}, environ={"BATCHCHAT_SHARED": "rediss://h:6380/1"})
    assert from_env.shared == "rediss://h:6380/1"
    flag = build_settings({"input": "x.jsonl", "shared": "redis://flag:1/0"}, environ={"BATCHCHAT_SHARED": "redis://e"})
    assert flag.shared == "redis://flag:1/0"
    with pytest.raises(UsageError, match="--shared must be a Redis URL"):
        build_settings({"input": "x.jsonl", "shared": "http://user:secret@host"}, environ={})
    with pytest.raises(UsageError, match="--shared-fallback"):
        build_settings({"input": "x.jsonl", "shared_fallback": "pray"}, environ={})


async def test_shards_cover_the_file_once_and_merge_into_one_line_per_id(tmp_path: Path, sim: Simulator) -> None:
    lines: list[object] = list(chat_lines(10))
    lines.insert(3, "")  # a blank line counts as a position: shards depend on the file alone
    lines.append({"prompt": "no id: derived from the line number", "model": "gpt-4o-mini"})
    src = write_jobs(tmp_path / "job.jsonl", lines)
    outputs = []
    for k in range(3):
        summary = await batchchat.arun(src, **run_options(sim, shard=f"{k}/3"))
        assert summary.exit_code == 0
        outputs.append(tmp_path / f"job.shard{k}-of-3.results.jsonl")
    ids = [{line["custom_id"] for line in read_output(out)} for out in outputs]
    # positions (line numbers from 0) modulo 3; line 4 is blank, line 12 has no id (derived: line-12)
    assert ids == [{"r0", "r5", "r8"}, {"r1", "r3", "r6", "r9"}, {"r2", "r4", "r7", "line-12"}]
    assert sum(map(len, ids)) == 11 and set.union(*ids) == {f"r{i}" for i in range(10)} | {"line-12"}
    assert sim.stats()["requests"] == 11
    report = merge(tmp_path / "all.jsonl", outputs)
    merged = read_output(tmp_path / "all.jsonl")
    assert len(merged) == 11 == report.written == report.succeeded and report.duplicates == 0
    assert {line["custom_id"] for line in merged} == set.union(*ids)


async def test_each_shard_resumes_on_its_own(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "job.jsonl", chat_lines(20))
    first = await batchchat.arun(src, **run_options(sim, shard="1/2"))
    assert first.succeeded == 10
    out = tmp_path / "job.shard1-of-2.results.jsonl"
    kept = out.read_bytes().splitlines(keepends=True)[:4]
    out.write_bytes(b"".join(kept) + b'{"id":"batch_req_x","custom_id":"r1')  # a crash: 6 lost, a torn line
    sim.reset_stats()
    again = await batchchat.arun(src, **run_options(sim, shard="1/2"))
    assert again.skipped_already_done == 4 and again.succeeded == 6 and sim.stats()["requests"] == 6
    ids = [line["custom_id"] for line in read_output(out)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(1, 20, 2))  # shard 1 only, once each
    sim.reset_stats()
    other = await batchchat.arun(src, **run_options(sim, shard="0/2"))  # the other shard is untouched by it
    assert other.succeeded == 10 and sim.stats()["requests"] == 10


def _line(custom_id: str, ok: bool, tag: str) -> bytes:
    error = None if ok else {"code": "server_error", "message": tag}
    return orjson.dumps({"id": f"batch_req_{tag}", "custom_id": custom_id, "error": error,
                         "response": {"status_code": 200 if ok else 500, "body": {"tag": tag}}})


def test_merge_keeps_a_success_over_an_error_and_the_last_among_equals(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_bytes(b"\n".join([_line("x", True, "a-x"), _line("y", False, "a-y"), _line("z", False, "a-z"),
                              _line("w", True, "a-w"), _line("only-a", True, "a-o")]) + b"\n")
    b.write_bytes(b"\n".join([_line("x", False, "b-x"), _line("y", True, "b-y"), _line("z", False, "b-z"),
                              _line("w", True, "b-w"), _line('q"uote', True, "b-q")]) + b"\n")
    report = merge(tmp_path / "out.jsonl", [a, b])
    out = {line["custom_id"]: line["id"] for line in read_output(tmp_path / "out.jsonl")}
    assert out == {"x": "batch_req_a-x", "y": "batch_req_b-y", "z": "batch_req_b-z", "w": "batch_req_b-w",
                   "only-a": "batch_req_a-o", 'q"uote': "batch_req_b-q"}
    assert (report.lines_read, report.written, report.duplicates, report.succeeded, report.failed) == (10, 6, 4, 5, 1)
    assert "6 ids (5 succeeded, 1 failed), 4 repeated lines dropped" in report.render()


def test_merge_is_crash_safe_and_refuses_what_is_not_a_result(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"old content\n")
    good = tmp_path / "good.jsonl"
    good.write_bytes(_line("a", True, "1") + b"\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(_line("b", True, "2") + b"\n" + b'{"not": "a result"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:2: not a batchchat result line"):
        merge(out, [good, bad])
    assert out.read_bytes() == b"old content\n"  # untouched, and no temporary left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.jsonl", "out.jsonl"]
    with pytest.raises(UsageError, match="does not exist"):
        merge(out, [tmp_path / "missing.jsonl"])


def test_merge_leaves_out_a_torn_last_line_and_may_merge_into_a_source(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    a.write_bytes(_line("a", False, "1") + b"\n" + _line("b", True, "2")[:30])  # killed mid-write
    b = tmp_path / "b.jsonl"
    b.write_bytes(_line("a", True, "3") + b"\n" + _line("c", True, "4"))  # whole, only the newline missing
    report = merge(a, [a, b])
    assert [line["custom_id"] for line in read_output(a)] == ["a", "c"]
    assert read_output(a)[0]["id"] == "batch_req_3"
    assert report.torn == [f"{a}: 30 bytes"] and "torn" in report.render()


def test_merge_refuses_an_output_a_run_is_still_writing(tmp_path: Path) -> None:
    shard = tmp_path / "s.jsonl"
    shard.write_bytes(_line("a", True, "1") + b"\n")
    fd = os.open(tmp_path / "s.jsonl.lock", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"4242\n")
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(UsageError, match=r"still being written by a batchchat run \(pid 4242\)"):
            merge(tmp_path / "out.jsonl", [shard])
    finally:
        os.close(fd)
    assert merge(tmp_path / "out.jsonl", [shard]).written == 1  # the run ended: its lock file stays, unheld
