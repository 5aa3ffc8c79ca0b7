"""A resume takes a done line as unchanged without parsing it when its bytes hash as recorded with the answer (the
line hash); whatever the line hashes say, the plan must be the one the fingerprints alone give (the request as
sent is what counts: an edit that keeps the request is no change, one that changes it is).

The reference is worked out here, line by line, from the fingerprints alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchchat.config.load import build_settings
from batchchat.config.settings import JobDefaults
from batchchat.errors import UsageError
from batchchat.input import reader
from batchchat.input.parse import Job, parse_line
from batchchat.input.plan import scan
from batchchat.output.lines import line_hasher, request_fingerprint
from batchchat.output.resume import ResumeIndex

WORDS = st.sampled_from(["hi", "there", "x", "é", "long " * 20])


@st.composite
def lines_and_answers(draw: Any) -> tuple[list[bytes], dict[str, tuple[str | None, int]], list[str], int]:
    """Input lines, what an earlier run recorded for some of their ids (fingerprint, line hash), the ids that
    failed, and a block size."""
    n = draw(st.integers(1, 40))
    clean = draw(st.booleans())  # a finished job rerun: Batch API lines, nearly all answered as they are
    lines: list[bytes] = []
    answers: dict[str, tuple[str | None, int]] = {}
    failed: list[str] = []
    line_hash = line_hasher(JobDefaults(model="m"))
    for i in range(n):
        custom_id = f"r{i}"
        body = {"model": "m", "messages": [{"role": "user", "content": draw(WORDS)}], "max_tokens": draw(
            st.integers(1, 3))}
        shape = "batch" if clean else draw(st.sampled_from(["batch", "batch-reordered", "batch-spaced", "bare",
                                                            "crlf"]))
        line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        if shape == "batch-reordered":  # the same request, its keys in another order
            raw = orjson.dumps({"body": dict(reversed(body.items())), "custom_id": custom_id,
                                "url": "/v1/chat/completions"})
        elif shape == "bare":  # a bare body: the run's --model default applies
            raw = orjson.dumps({"custom_id": custom_id, **{k: v for k, v in body.items() if k != "model"}})
        else:
            raw = orjson.dumps(line)
            if shape == "batch-spaced":
                raw = raw.replace(b'":', b'": ')
        lines.append(raw + (b"\r" if shape == "crlf" else b""))
        record = draw(st.sampled_from(["done-same"] * 6 + ["done-old-line", "done-changed"] if clean else [
            "none", "done-same", "done-same-no-hash", "done-old-line", "done-changed", "done-unfingerprinted",
            "failed"]))
        answered = body if record != "done-changed" else {**body, "max_tokens": 9}
        fingerprint = request_fingerprint("/v1/chat/completions", answered)
        if record == "done-same":  # answered for exactly this line
            answers[custom_id] = (fingerprint, line_hash(raw))
        elif record == "done-same-no-hash":  # answered by a build that wrote no line hashes
            answers[custom_id] = (fingerprint, 0)
        elif record == "done-old-line":  # answered for another spelling of the same request
            answers[custom_id] = (fingerprint, line_hash(orjson.dumps(line) + b" "))
        elif record == "done-changed":  # answered for another request, under this very line's hash: a stale
            answers[custom_id] = (fingerprint, line_hash(raw + b"x"))  # hash never makes a change unseen
        elif record == "done-unfingerprinted":
            answers[custom_id] = (None, 0)
        elif record == "failed":
            failed.append(custom_id)
    return lines, answers, failed, draw(st.sampled_from([1, 64, 300, 4096, 1 << 20]))


@contextmanager
def block_bytes(size: int) -> Any:
    before = reader.BLOCK_BYTES
    reader.BLOCK_BYTES = size
    try:
        yield
    finally:
        reader.BLOCK_BYTES = before


def plan_of(src: Path, index: ResumeIndex, resend: bool) -> Any:
    run = build_settings({"input": str(src), "model": "m"}, environ={})
    try:
        plan = scan(src, "in", run, index, resend_changed=resend)
    except UsageError as exc:
        return "changed" if "have changed since" in str(exc) else str(exc)
    return [i for i, flag in enumerate(plan.skip) if flag], plan.to_run, plan.changed, plan.retried_ids


def reference(lines: list[bytes], answers: dict[str, tuple[str | None, int]], failed: list[str],
              resend: bool) -> Any:
    """What the fingerprints say: a done line is skipped when its request is the one answered (or no
    fingerprint was recorded), else it has changed (refused, or sent again with `resend`)."""
    skipped, to_run, changed, retried = [], 0, 0, set()
    for line_no, raw in enumerate(lines, 1):
        job = parse_line(raw.rstrip(b"\r"), line_no, JobDefaults(model="m"))
        assert isinstance(job, Job)
        if job.custom_id in answers:
            fingerprint = answers[job.custom_id][0]
            if fingerprint is None or fingerprint == request_fingerprint(job.url, job.body):
                skipped.append(line_no)
                continue
            changed += 1
            if not resend:
                continue
            retried.add(job.custom_id)
        elif job.custom_id in failed:
            retried.add(job.custom_id)
        to_run += 1
    if changed and not resend:
        return "changed"
    return skipped, to_run, changed, retried


def index_of(answers: dict[str, tuple[str | None, int]], failed: list[str]) -> ResumeIndex:
    fingerprints = {k: fp for k, (fp, _) in answers.items() if fp is not None}
    return ResumeIndex.of(answers, failed, fingerprints, {k: lh for k, (_, lh) in answers.items()})


@settings(deadline=None)
@given(case=lines_and_answers(), resend=st.booleans())
def test_line_hashes_never_change_the_plan(tmp_path_factory: pytest.TempPathFactory, case: Any,
                                           resend: bool) -> None:
    lines, answers, failed, size = case
    src = tmp_path_factory.mktemp("lh") / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    with block_bytes(size):
        assert plan_of(src, index_of(answers, failed), resend) == reference(lines, answers, failed, resend)


def test_a_line_answered_as_it_is_is_not_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken: lines whose hashes match are skipped, a block at a time, without a parse."""
    line_hash = line_hasher(JobDefaults())
    lines = [orjson.dumps({"custom_id": f"r{i}", "body": {"model": "m", "messages": [
        {"role": "user", "content": f"hello {i}"}]}, "url": "/v1/chat/completions"}) for i in range(500)]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    run = build_settings({"input": str(src)}, environ={})
    jobs = [parse_line(raw, i + 1, run.defaults) for i, raw in enumerate(lines)]
    assert all(isinstance(job, Job) for job in jobs)
    index = ResumeIndex.of([f"r{i}" for i in range(500)], (),
                           {job.custom_id: request_fingerprint(job.url, job.body) for job in jobs},  # type: ignore[union-attr]
                           {f"r{i}": line_hash(raw) for i, raw in enumerate(lines)})
    parsed: list[int] = []
    real = parse_line
    monkeypatch.setattr("batchchat.input.plan.parse_line",
                        lambda raw, line_no, defaults: parsed.append(line_no) or real(raw, line_no, defaults))
    with block_bytes(4096):
        plan = scan(src, "in", run, index)
    assert (plan.skipped, plan.to_run, parsed) == (500, 0, [])
