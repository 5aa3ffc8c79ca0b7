"""Resume keeps answers to the question asked (#15.1), a rerun keeps its exit code's meaning (#15.2), `--limit`
(#15.15), and the resume index held as 128-bit hashes (#10 memory). Against the real simulator over loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from cli_process import cli, cli_env
from helpers import chat_lines, read_output, run_options, write_jobs

import batchchat
from batchchat.config.settings import JobDefaults
from batchchat.errors import UsageError
from batchchat.output.ids import IdIndex, IdIndexBuilder, id_key
from batchchat.output.lines import Result, encode_result, line_hasher, request_fingerprint
from batchchat.output.resume import load_resume_index
from batchchat.simulator import Simulator

# -- fingerprints -------------------------------------------------------------------------------------------


async def test_each_answer_records_the_fingerprint_of_its_request(tmp_path: Path, sim: Simulator) -> None:
    lines = chat_lines(3)
    src = write_jobs(tmp_path / "in.jsonl", lines)
    summary = await batchchat.arun(src, **run_options(sim))
    assert summary.exit_code == 0
    raw = (tmp_path / "in.results.jsonl").read_bytes().splitlines()
    by_id = {orjson.loads(line)["custom_id"]: line for line in raw}
    line_hash = line_hasher(JobDefaults())  # the run's defaults: none given
    for line in lines:
        body = {k: v for k, v in line.items() if k != "custom_id"}
        fingerprint = request_fingerprint("/v1/chat/completions", body)
        # after the head (id, custom_id, error), where the resume's regular expressions read it, and then the
        # hash of the input line as it was read
        assert by_id[line["custom_id"]].startswith(b'{"id":"batch_req_')
        hashed = f"{line_hash(orjson.dumps(line)):016x}"
        assert (f'"error":null,"fingerprint":"{fingerprint}","line_hash":"{hashed}","response":'.encode()
                in by_id[line["custom_id"]])
    index = load_resume_index(tmp_path / "in.results.jsonl")
    for line in lines:
        body = {k: v for k, v in line.items() if k != "custom_id"}
        position = index.done.position(line["custom_id"])
        assert index.done.fingerprint(position) == int(request_fingerprint("/v1/chat/completions", body), 16)


def test_the_fingerprint_is_of_the_request_after_defaults() -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert request_fingerprint("/v1/chat/completions", body) == request_fingerprint(
        "/v1/chat/completions", dict(reversed(body.items())))  # key order does not matter
    assert request_fingerprint("/v1/chat/completions", body) != request_fingerprint("/v1/responses", body)
    assert request_fingerprint("/v1/chat/completions", body) != request_fingerprint(
        "/v1/chat/completions", {**body, "max_tokens": 5})
    assert len(request_fingerprint("/v1/chat/completions", body)) == 16


async def test_a_changed_prompt_is_a_conflict_not_an_old_answer(tmp_path: Path, sim: Simulator) -> None:
    lines = chat_lines(5)
    src = write_jobs(tmp_path / "in.jsonl", lines)
    assert (await batchchat.arun(src, **run_options(sim))).exit_code == 0
    out = tmp_path / "in.results.jsonl"
    before = out.read_bytes()
    lines[1]["messages"][0]["content"] = "a different question"
    lines[3]["max_tokens"] = 7
    write_jobs(src, lines)
    with pytest.raises(UsageError, match=r"2 requests already answered .* have changed since") as caught:
        await batchchat.arun(src, **run_options(sim))
    assert "--resend-changed" in str(caught.value) and "-o" in str(caught.value)
    assert "line 2 ('r1')" in str(caught.value) and "line 4 ('r3')" in str(caught.value)
    assert caught.value.exit_code == 2
    assert out.read_bytes() == before and sim.stats()["requests"] == 5  # nothing sent, nothing written

    summary = await batchchat.arun(src, **run_options(sim, resend_changed=True))
    assert summary.exit_code == 0 and summary.succeeded == 2 and summary.skipped_already_done == 3
    assert sim.stats()["requests"] == 7
    result = read_output(out)
    assert sorted(line["custom_id"] for line in result) == [f"r{i}" for i in range(5)]  # old lines superseded
    by_id = {line["custom_id"]: line for line in result}
    assert by_id["r1"]["fingerprint"] == request_fingerprint(
        "/v1/chat/completions", {k: v for k, v in lines[1].items() if k != "custom_id"})
    # and now the output matches the input: a rerun has nothing to do
    again = await batchchat.arun(src, **run_options(sim))
    assert again.exit_code == 0 and again.total == 0 and sim.stats()["requests"] == 7


async def test_a_changed_default_is_a_change_too(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", [{"custom_id": "a", "prompt": "hi"}])
    assert (await batchchat.arun(src, **run_options(sim, model="gpt-4o-mini"))).exit_code == 0
    with pytest.raises(UsageError, match="1 requests already answered"):
        await batchchat.arun(src, **run_options(sim, model="gpt-4o-mini", max_tokens=9))


async def test_answers_without_a_fingerprint_are_taken_as_matching(tmp_path: Path, sim: Simulator) -> None:
    """Outputs written before fingerprints existed resume as they did."""
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(4))
    out = tmp_path / "in.results.jsonl"
    body = b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}'
    out.write_bytes(b"".join(encode_result(Result(f"r{i}", i + 1, 200, body), f"batch_req_{i}") for i in range(3)))
    assert b"fingerprint" not in out.read_bytes()
    summary = await batchchat.arun(src, **run_options(sim))
    assert summary.exit_code == 0 and summary.skipped_already_done == 3 and summary.succeeded == 1
    assert sim.stats()["requests"] == 1


def test_stdin_without_an_output_is_refused(tmp_path: Path, sim: Simulator) -> None:
    """Two jobs read from standard input must not share ./stdin.results.jsonl (the second inheriting the first
    one's answers for line-1, line-2, ...)."""
    job = b'{"prompt": "hi", "model": "gpt-4o-mini"}\n'
    done = cli("run", "-", "--base-url", sim.base_url, "--progress", "off", input=job.decode(), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "standard input" in done.stderr and "-o" in done.stderr
    assert not (tmp_path / "stdin.results.jsonl").exists() and sim.stats()["requests"] == 0
    given = cli("run", "-", "-o", tmp_path / "out.jsonl", "--base-url", sim.base_url, "--progress", "off",
                input=job.decode(), cwd=tmp_path)
    assert given.returncode == 0, given.stderr


# -- a rerun's exit code ----------------------------------------------------------------------------------------


async def test_a_rerun_with_only_invalid_lines_left_keeps_exit_1(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", [b"{not json", chat_lines(1)[0], b'{"custom_id": "x", "messages": 3}'])
    first = await batchchat.arun(src, **run_options(sim))
    assert (first.exit_code, first.succeeded, first.failed) == (1, 1, 2)
    # before the fix: UsageError "2 invalid lines (no line is valid); nothing was sent", exit 2
    second = await batchchat.arun(src, **run_options(sim))
    assert (second.exit_code, second.succeeded, second.failed, second.skipped_already_done) == (1, 0, 2, 1)


async def test_a_file_of_invalid_lines_only_is_still_refused(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", [b"{not json", b"[]"])
    with pytest.raises(UsageError, match="no line is valid"):
        await batchchat.arun(src, **run_options(sim))


# -- --limit ----------------------------------------------------------------------------------------------------


async def test_limit_sends_only_the_first_lines_with_work_to_do(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(10))
    trial = await batchchat.arun(src, **run_options(sim, limit=3))
    assert (trial.exit_code, trial.total, trial.succeeded, trial.left_for_later) == (0, 3, 3, 7)
    assert "7 left for a later run (--limit)" in trial.render()
    out = tmp_path / "in.results.jsonl"
    assert [line["custom_id"] for line in read_output(out)] == ["r0", "r1", "r2"]
    assert sim.stats()["requests"] == 3
    nxt = await batchchat.arun(src, **run_options(sim, limit=4))  # the next four pending, not the first four
    assert (nxt.succeeded, nxt.skipped_already_done, nxt.left_for_later) == (4, 3, 3)
    rest = await batchchat.arun(src, **run_options(sim))
    assert (rest.exit_code, rest.succeeded, rest.left_for_later) == (0, 3, 0)
    assert sorted(line["custom_id"] for line in read_output(out)) == sorted(f"r{i}" for i in range(10))
    assert sim.stats()["requests"] == 10


def test_limit_on_the_command_line(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(5))
    done = cli("run", src, "--limit", "2", "--base-url", sim.base_url, "--progress", "off")
    assert done.returncode == 0, done.stderr
    assert "3 more lines left for a later run" in done.stderr and "3 left for a later run" in done.stdout
    assert sim.stats()["requests"] == 2
    bad = cli("run", src, "--limit", "0", "--base-url", sim.base_url, "--progress", "off")
    assert bad.returncode == 2 and "--limit must be at least 1" in bad.stderr
    shown = cli("run", "--help", env=cli_env(COLUMNS="200"))
    assert "--limit" in shown.stdout and "--resend-changed" in shown.stdout


# -- the resume index as hashes -----------------------------------------------------------------------------------


def test_the_id_index_is_exact_for_the_ids_it_holds() -> None:
    ids = [f"r{i}" for i in range(20_000)] + ["", "é", "a\"b", "\ufffd"]
    index = IdIndex.of(ids, {"r5": 5})
    assert len(index) == len(ids)
    assert all(custom_id in index for custom_id in ids)
    assert not any(f"x{i}" in index for i in range(20_000))
    assert index.fingerprint(index.position("r5")) == 5 and index.fingerprint(index.position("r6")) == 0
    assert index.keys() == sorted(map(id_key, ids))
    assert index.nbytes() < 34 * len(ids) + 300_000  # 32 bytes an id, and a fixed table of prefixes


def test_the_last_fingerprint_of_an_id_wins() -> None:
    builder = IdIndexBuilder()
    for fingerprint in (1, 2, 3):
        builder.add("a", fingerprint)
    builder.add("b", 9)
    index = builder.build()
    assert len(index) == 2 and index.fingerprint(index.position("a")) == 3


def test_a_million_done_ids_fit_in_a_small_index() -> None:
    """The index of a million done ids held as str took ~90 MB; as hashes (with a fingerprint and a line hash
    each) it is 32 MB (measured in a fresh process, so that other tests' memory does not count)."""
    code = (
        "from batchchat.output.ids import IdIndexBuilder\n"
        "b = IdIndexBuilder()\n"
        "for i in range(1_000_000): b.add(f'req-{i:07d}', i + 1)\n"
        "index = b.build()\n"
        "assert len(index) == 1_000_000 and 'req-0000042' in index\n"
        # VmHWM, not ru_maxrss: the latter keeps the peak of the forking parent (pytest) across exec
        "peak = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "print(index.nbytes(), peak)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    nbytes, peak_kb = map(int, done.stdout.split())
    assert nbytes < 34_000_000
    assert peak_kb < 80_000  # the interpreter, the builder's buckets and the index together (~52 MB)


def test_scan_takes_done_and_failed_as_an_index_or_as_ids(tmp_path: Path) -> None:
    """The call shape other stages use (`scan(path, name, settings, done, failed)`) keeps working."""
    from batchchat.config.load import build_settings
    from batchchat.input.plan import scan
    from batchchat.output.resume import ResumeIndex

    src = write_jobs(tmp_path / "in.jsonl", chat_lines(5))
    settings = build_settings({"input": str(src)}, environ={})
    index = ResumeIndex.of(["r1", "r2"], ["r3"])
    for plan in (scan(src, "in", settings, index), scan(src, "in", settings, index.done, index.failed),
                 scan(src, "in", settings, {"r1", "r2"}, {"r3"})):
        assert (plan.skipped, plan.to_run, plan.retried_ids) == (2, 3, {"r3"})
    assert scan(src, "in", settings, set(), set()).to_run == 5
