"""Input parsing: the three line shapes, defaults, tolerated noise, and every rejection names its field."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from batchchat.config.settings import CHAT, EMBEDDINGS, RESPONSES, JobDefaults
from batchchat.input import reader as jobs
from batchchat.input.parse import InvalidLine, Job, parse_line, read_jobs
from batchchat.input.reader import block_lines, iter_blocks, iter_raw_lines, leading_ids

DEFAULTS = JobDefaults(model="m-default", system="Be brief.", max_tokens=50, temperature=0.3)


def parse(obj: object, defaults: JobDefaults = DEFAULTS, line_no: int = 7) -> Job | InvalidLine:
    raw = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    return parse_line(raw, line_no, defaults)


def test_batch_api_line_keeps_its_body_and_url() -> None:
    job = parse({"custom_id": "a", "method": "POST", "url": "/v1/embeddings",
                 "body": {"model": "e", "input": "hi"}})
    assert isinstance(job, Job)
    assert (job.custom_id, job.url, job.body) == ("a", EMBEDDINGS, {"model": "e", "input": "hi"})


def test_bare_body_takes_metadata_out_and_fills_defaults() -> None:
    job = parse({"custom_id": "b", "messages": [{"role": "user", "content": "x"}], "metadata": {"k": 1}})
    assert isinstance(job, Job)
    assert job.url == CHAT
    assert job.metadata == {"k": 1}
    assert "metadata" not in job.body and "custom_id" not in job.body
    assert job.body["model"] == "m-default"
    assert job.body["max_tokens"] == 50  # the field every OpenAI-compatible server knows
    assert job.body["temperature"] == 0.3


def test_shorthand_becomes_messages_with_the_system_default() -> None:
    job = parse({"prompt": "hello"}, line_no=3)
    assert isinstance(job, Job)
    assert job.custom_id == "line-3"
    assert job.body["messages"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "hello"}]


def test_line_values_win_over_defaults() -> None:
    job = parse({"prompt": "p", "system": "own", "model": "own-model", "max_tokens": 9})
    assert isinstance(job, Job)
    assert job.body["model"] == "own-model"
    assert job.body["messages"][0]["content"] == "own"
    assert job.body["max_tokens"] == 9 and "max_completion_tokens" not in job.body


def test_endpoint_default_routes_bare_bodies() -> None:
    job = parse({"model": "m", "input": "x"}, JobDefaults(endpoint=RESPONSES))
    assert isinstance(job, Job) and job.url == RESPONSES


def test_bom_crlf_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\r\n\r\n   \n{"prompt": "b"}\r\n')
    jobs = list(read_jobs(path, DEFAULTS))
    assert [j.custom_id for j in jobs] == ["line-1", "line-4"]
    assert all(isinstance(j, Job) for j in jobs)


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "expected a JSON object, got an array"),
        (b'"text"', None, "got a string"),
        (b'{"prompt": "\xff\xfe"}', None, "UTF-8"),
        ({"model": "m"}, "messages", "missing"),
        ({"model": "m", "messages": []}, "messages", "non-empty"),
        ({"model": "m", "messages": "hi"}, "messages", "non-empty array"),
        ({"model": "m", "messages": [1]}, "messages[0]", "must be an object"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role", "missing"),
        ({"model": 5, "messages": [{"role": "user", "content": "x"}]}, "model", "non-empty string"),
        ({"prompt": 12}, "prompt", "must be a string"),
        ({"prompt": "x", "stream": True}, "stream", "not supported"),
        ({"prompt": "x", "stream": "True"}, "stream", "must be a boolean"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens", "positive integer"),
        ({"prompt": "x", "max_tokens": "5"}, "max_tokens", "positive integer"),
        ({"prompt": "x", "n": -1}, "n", "positive integer"),
        ({"prompt": "x", "temperature": "hot"}, "temperature", "number"),
        ({"prompt": "x", "custom_id": 5}, "custom_id", "non-empty string"),
        ({"url": "/v1/images", "body": {}}, "url", "not a supported endpoint"),
        ({"method": "GET", "url": "/v1/chat/completions", "body": {}}, "method", "POST"),
        ({"url": "/v1/chat/completions", "body": "x"}, "body", "JSON object"),
        ({"url": "/v1/embeddings", "body": {"model": "e"}}, "input", "missing"),
        ({"model": "e", "input": []}, "input", "non-empty array"),
    ],
)
def test_invalid_lines_name_the_field_and_reason(line: object, field: str | None, words: str) -> None:
    bad = parse(line, JobDefaults(model="m"))
    assert isinstance(bad, InvalidLine), bad
    assert bad.field == field
    assert words in bad.reason
    assert bad.describe("in.jsonl").startswith("in.jsonl:7: ")


def test_missing_model_without_default() -> None:
    bad = parse({"prompt": "x"}, JobDefaults())
    assert isinstance(bad, InvalidLine) and bad.field == "model" and "--model" in bad.reason


def test_invalid_line_keeps_its_custom_id() -> None:
    bad = parse({"custom_id": "keep", "model": "m"})
    assert isinstance(bad, InvalidLine) and bad.custom_id == "keep"


def test_huge_line_is_rejected_without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batchchat.input.parse.MAX_LINE_BYTES", 100)
    bad = parse({"prompt": "x" * 200})
    assert isinstance(bad, InvalidLine) and "bytes" in bad.reason


@pytest.mark.parametrize("size", [1, 2, 5, 16, 100, 1 << 20])
def test_blocks_hold_whole_lines_and_yield_the_same_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(jobs, "BLOCK_BYTES", size)
    rng = random.Random(size)
    path = tmp_path / "in.jsonl"
    pieces = [b"", b" ", b"\r", b"\xef\xbb\xbf", b'{"a": 1}', b"x" * 40, b"\r\r", b"\t", b"\xff"]
    for _ in range(200):
        data = b"".join(rng.choice(pieces) + rng.choice([b"\n", b"\r\n", b""]) for _ in range(rng.randint(0, 12)))
        path.write_bytes(data)
        blocks = list(iter_blocks(path))
        assert b"".join(blocks) == data
        assert all(block.endswith(b"\n") for block in blocks[:-1]) and all(blocks)
        lines, line_no = [], 1
        for block in blocks:
            lines += block_lines(line_no, block)
            line_no += block.count(b"\n")
        assert lines == list(iter_raw_lines(path))


def test_leading_ids_only_when_every_line_starts_with_a_plain_custom_id() -> None:
    assert leading_ids(b'{"custom_id":"a","x":1}\n{ "custom_id" : "\xc3\xa9"}\r\n') == ["a", "é"]
    assert leading_ids(b'{"custom_id":"a"}\n\n') is None  # a blank line
    assert leading_ids(b'{"custom_id":"a"}\n {"custom_id":"b"}\n') is None  # not at the start
    assert leading_ids(b'{"custom_id":"a"}\n{"x":1,"custom_id":"b"}\n') is None  # not the first key
    assert leading_ids(b'{"custom_id":"a\\"b"}\n') is None  # an escape
    assert leading_ids(b'{"custom_id":""}\n') is None  # empty
    assert leading_ids(b'{"custom_id":"\xff"}\n') is None  # not UTF-8
    assert leading_ids(b'{\n"custom_id":"a"}\n') is None  # a match never runs over a line end
