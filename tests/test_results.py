"""The output file: line shape, resume index, torn-line repair, compaction and the run lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from batchchat.errors import OutputLockedError, OutputWriteError, UsageError
from batchchat.output.compact import compact
from batchchat.output.ids import id_key
from batchchat.output.lines import Result, encode_result, iter_results
from batchchat.output.lock import RunLock
from batchchat.output.resume import load_resume_index
from batchchat.output.writer import ResultWriter


def keys(*ids: str) -> list[int]:
    """What an `IdIndex` of `ids` holds: their 128-bit hashes, in order."""
    return sorted(map(id_key, ids))


def ok(custom_id: str) -> bytes:
    return encode_result(Result(custom_id, 1, 200, b'{"usage": {"prompt_tokens": 1}}', "req", attempts=1,
                                usage={"prompt_tokens": 1}), "id-" + custom_id)


def bad(custom_id: str) -> bytes:
    return encode_result(Result(custom_id, 1, 400, b'{"error": {"message": "no"}}', error_code="http_400",
                                error_message="HTTP 400: no"), "id-" + custom_id)


def test_line_has_the_batch_api_shape() -> None:
    line = orjson.loads(encode_result(Result("a", 3, 200, b'{"x":1}', "req_9", attempts=2, latency=0.0123,
                                             usage={"prompt_tokens": 1}, metadata={"m": 1}), "batch_req_1"))
    assert line["id"] == "batch_req_1" and line["custom_id"] == "a" and line["error"] is None
    assert line["response"] == {"status_code": 200, "request_id": "req_9", "body": {"x": 1}}
    assert (line["attempts"], line["latency_ms"], line["line"], line["metadata"]) == (2, 12.3, 3, {"m": 1})


def test_failed_line_keeps_status_and_a_non_json_body_as_text() -> None:
    line = orjson.loads(encode_result(Result("a", 1, 502, b"<html>", error_code="http_502",
                                             error_message="gave up"), "x"))
    assert line["error"] == {"code": "http_502", "message": "gave up"}
    assert line["response"]["status_code"] == 502 and line["response"]["body"] == "<html>"


def test_pretty_printed_body_is_reencoded_on_one_line() -> None:
    data = encode_result(Result("a", 1, 200, b'{\n  "x": 1\n}'), "x")
    assert data.count(b"\n") == 1


def test_resume_index_and_torn_line_repair(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(ok("a") + bad("b") + ok("c") + bad("c") + ok("d")[:25])
    index = load_resume_index(out)
    assert index.done.keys() == keys("a", "c") and index.failed.keys() == keys("b")
    assert index.repair and "torn" in index.repair
    assert out.read_bytes().endswith(b"\n") and len(out.read_bytes().splitlines()) == 4


def test_whole_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(ok("a") + ok("b").rstrip(b"\n"))
    index = load_resume_index(out)
    assert index.done.keys() == keys("a", "b") and out.read_bytes().endswith(b"\n")


def test_an_id_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(ok("a") + b'{"id":"x","custom_id":"\xff","error":null}\n')
    with pytest.raises(UsageError, match=r"out.jsonl:2: not a batchchat result line"):
        load_resume_index(out)


def test_garbage_in_the_middle_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(ok("a") + b"hello\n" + ok("b"))
    with pytest.raises(UsageError, match=r"out.jsonl:2: not a batchchat result line"):
        load_resume_index(out)


def test_compact_keeps_the_last_line_of_retried_ids(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(bad("b") + ok("a") + bad("c") + ok("b") + bad("c"))
    assert compact(out, {"b", "c"}) == 2
    lines = list(iter_results(out))
    assert [(x["custom_id"], x["error"] is None) for x in lines] == [("a", True), ("b", True), ("c", False)]


def test_writer_refuses_a_removed_or_read_only_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = ResultWriter(out)
    writer.open()
    writer.write(ok("a"), 0.0)
    out.chmod(0o444)
    with pytest.raises(OutputWriteError, match="read-only"):
        writer.write(ok("b"), 0.0)
    out.chmod(0o644)
    out.unlink()
    with pytest.raises(OutputWriteError, match="removed"):
        writer.write(ok("b"), 0.0)
    writer.close()


def test_writer_reports_a_full_disk(tmp_path: Path) -> None:
    # A file-size limit makes write() fail like a full disk (Python ignores SIGXFSZ).
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from batchchat.output.writer import ResultWriter\n"
        "from batchchat.errors import OutputWriteError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))\n"
        "w = ResultWriter(Path(sys.argv[1])); w.open()\n"
        "try:\n    w.write(b'x' * 300 + b'\\n', 0.0)\nexcept OutputWriteError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "o.jsonl")], capture_output=True,
                            text=True, timeout=30)
    assert "the disk is full" in result.stdout, result.stderr


def test_lock_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from batchchat.output.lock import RunLock\n"
         "RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(30)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=f"pid {holder.pid}"):
            RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    lock = RunLock(out)
    lock.acquire()  # a lock left by a killed process does not block ...
    # ... and is held again: a second run is refused, naming this process (flock is per open file, so a second
    # RunLock in this process meets it as another process would)
    with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
        RunLock(out).acquire()
    lock.release()
    again = RunLock(out)
    again.acquire()  # released: free for the next run
    again.release()
