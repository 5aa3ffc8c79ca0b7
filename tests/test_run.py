"""The pipeline end to end, over loopback HTTP against the real simulator."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from helpers import TEST_KEY, chat_lines, read_output, run_options, write_jobs

import batchchat
from batchchat.errors import UsageError
from batchchat.simulator import Simulator


async def test_every_line_shape_and_endpoint(tmp_path: Path, sim: Simulator) -> None:
    lines = [
        {"custom_id": "batch", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}},
        {"custom_id": "bare", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
         "metadata": {"row": 7}},
        {"prompt": "short form", "metadata": "tag"},
        {"custom_id": "emb", "url": "/v1/embeddings", "body": {"model": "text-embedding-3-small", "input": ["a", "b"]}},
        {"custom_id": "cmp", "url": "/v1/completions",
         "body": {"model": "gpt-3.5-turbo-instruct", "prompt": "once upon"}},
        {"custom_id": "rsp", "url": "/v1/responses", "body": {"model": "gpt-4o-mini", "input": "hello"}},
    ]
    src = write_jobs(tmp_path / "in.jsonl", lines)
    summary = await batchchat.arun(src, **run_options(sim, model="gpt-4o-mini", max_tokens=8))
    assert summary.exit_code == 0 and summary.succeeded == 6 and summary.failed == 0
    out = {line["custom_id"]: line for line in read_output(tmp_path / "in.results.jsonl")}
    assert set(out) == {"batch", "bare", "line-3", "emb", "cmp", "rsp"}
    assert out["bare"]["metadata"] == {"row": 7} and out["line-3"]["metadata"] == "tag"
    assert out["emb"]["response"]["body"]["object"] == "list"
    assert out["rsp"]["usage"]["input_tokens"] > 0
    for line in out.values():
        assert line["error"] is None and line["response"]["status_code"] == 200 and line["attempts"] == 1
        assert line["usage"] == line["response"]["body"]["usage"]
    assert out["line-3"]["usage"]["completion_tokens"] <= 8
    assert summary.prompt_tokens == sum(sim.stats()["prompt_tokens"] for _ in [0])
    assert sim.stats()["requests"] == 6


async def test_the_body_sent_is_the_request_without_batchchat_fields(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(orjson.loads(request.content))
        return httpx.Response(200, json={"usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    src = write_jobs(tmp_path / "in.jsonl", [{"custom_id": "a", "prompt": "x", "metadata": {"m": 1}}])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        summary = await batchchat.arun(src, client=client, model="m", progress="off", api_key=TEST_KEY)
    assert summary.succeeded == 1
    assert sent == [{"model": "m", "messages": [{"role": "user", "content": "x"}]}]


async def test_resume_sends_only_what_is_not_done(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(10))
    out = tmp_path / "out.jsonl"
    first = await batchchat.arun(src, out, **run_options(sim))
    assert first.succeeded == 10
    write_jobs(src, chat_lines(15))
    sim.reset_stats()
    second = await batchchat.arun(src, out, **run_options(sim))
    assert (second.succeeded, second.skipped_already_done, second.total) == (5, 10, 5)
    assert sim.stats()["requests"] == 5
    ids = [line["custom_id"] for line in read_output(out)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(15))
    sim.reset_stats()
    third = await batchchat.arun(src, out, **run_options(sim))
    assert third.total == 0 and third.exit_code == 0 and sim.stats()["requests"] == 0


async def test_failures_are_retried_on_rerun_and_leave_one_line_per_id(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(6))
    out = tmp_path / "out.jsonl"
    failing = simulator(fault_rates={"500": 1.0})
    first = await batchchat.arun(src, out, **run_options(failing, max_attempts=2))
    assert first.failed == 6 and first.exit_code == 1
    assert failing.stats()["requests"] == 12
    assert all(line["error"]["code"] == "http_500" and "gave up after 2 attempts" in line["error"]["message"]
               for line in read_output(out))
    healthy = simulator()
    second = await batchchat.arun(src, out, **run_options(healthy))
    assert second.succeeded == 6 and second.exit_code == 0
    lines = read_output(out)
    assert len(lines) == 6 and all(line["error"] is None for line in lines)


async def test_transient_faults_are_retried_until_success(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    kinds = ("500", "502", "503", "503_retry_after", "429", "429_retry_after", "drop", "truncate", "non_json")
    sim = simulator(fault_sequence=kinds)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(3))
    summary = await batchchat.arun(src, **run_options(sim, concurrency=1, max_attempts=len(kinds) + 1))
    assert summary.succeeded == 3 and summary.exit_code == 0
    attempts = sorted(line["attempts"] for line in read_output(tmp_path / "in.results.jsonl"))
    assert attempts == [1, 1, len(kinds) + 1]
    assert summary.retries == len(kinds) and summary.rate_limited_429 == 2
    assert sim.stats()["requests"] == len(kinds) + 3


async def test_a_hung_request_times_out_and_is_retried(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    sim = simulator(fault_sequence=("hang",))
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(1))
    summary = await batchchat.arun(src, **run_options(sim, timeout=0.3))
    assert summary.succeeded == 1
    assert read_output(tmp_path / "in.results.jsonl")[0]["attempts"] == 2


async def test_client_errors_are_not_retried_and_the_key_is_redacted(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    sim = simulator(fault_sequence=("echo_headers",))
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(1))
    summary = await batchchat.arun(src, **run_options(sim))
    assert summary.failed == 1 and summary.exit_code == 1
    raw = (tmp_path / "in.results.jsonl").read_bytes()
    assert TEST_KEY.encode() not in raw and b"[REDACTED]" in raw
    line = orjson.loads(raw)
    assert line["error"]["code"] == "http_400" and line["attempts"] == 1


@pytest.mark.parametrize("fault", ["401", "403"])
async def test_a_rejected_key_stops_the_run(
    tmp_path: Path, simulator: Callable[..., Simulator], fault: str
) -> None:
    sim = simulator(api_key="sk-the-right-key-000") if fault == "401" else simulator(fault_rates={"403": 1.0})
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(200))
    messages: list[str] = []
    settings = batchchat.settings_for(src, **run_options(sim, concurrency=4))
    from batchchat.online.engine import Engine

    summary = await Engine(settings, echo=messages.append).run()
    assert summary.exit_code == 3
    assert sim.stats()["requests"] <= 4
    assert any("OPENAI_API_KEY" in m for m in messages) and not any(TEST_KEY in m for m in messages)
    assert read_output(tmp_path / "in.results.jsonl") == []  # no error lines for requests never tried


async def test_limits_are_respected_from_the_server_side(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    sim = simulator(rpm=3000, tpm=150_000)  # 50 requests/s, 2,500 tokens/s, enforced per second
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(120, max_tokens=40))
    start = time.monotonic()
    summary = await batchchat.arun(src, **run_options(sim, rpm=3000, tpm=150_000, concurrency=32))
    elapsed = time.monotonic() - start
    stats = sim.stats()
    assert summary.succeeded == 120
    assert stats["rate_limited"] == 0 and summary.rate_limited_429 == 0
    assert elapsed >= 1.3  # 120 requests at 50/s after a one-second burst


async def test_token_budget_binds_when_tokens_are_scarce(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    sim = simulator(tpm=60_000)  # 1,000 tokens/s
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(20, max_tokens=100))  # ~115 tokens charged each
    start = time.monotonic()
    summary = await batchchat.arun(src, **run_options(sim, tpm=60_000))
    assert summary.succeeded == 20 and sim.stats()["rate_limited"] == 0
    assert time.monotonic() - start >= 1.0


async def test_a_request_larger_than_the_budget_is_an_error_line(tmp_path: Path, sim: Simulator) -> None:
    lines = [*chat_lines(2), {"custom_id": "huge", "model": "gpt-4o-mini", "max_tokens": 5000,
                              "messages": [{"role": "user", "content": "x"}]}]
    src = write_jobs(tmp_path / "in.jsonl", lines)
    summary = await batchchat.arun(src, **run_options(sim, tpm=1000))
    assert summary.succeeded == 2 and summary.failed == 1 and summary.exit_code == 1
    errors = {x["custom_id"]: x["error"] for x in read_output(tmp_path / "in.results.jsonl")}
    assert errors["huge"]["code"] == "request_too_large" and "--tpm" in errors["huge"]["message"]


async def test_invalid_lines_get_error_lines_and_the_run_goes_on(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", [*chat_lines(2), "{oops", {"custom_id": "nomsg", "model": "gpt-4o-mini"}])
    summary = await batchchat.arun(src, **run_options(sim))
    assert (summary.succeeded, summary.failed, summary.exit_code) == (2, 2, 1)
    errors = {x["custom_id"]: x["error"] for x in read_output(tmp_path / "in.results.jsonl") if x["error"]}
    assert errors["line-3"]["code"] == "invalid_request" and "in.jsonl:3" in errors["line-3"]["message"]
    assert "messages: missing" in errors["nomsg"]["message"]
    assert sim.stats()["requests"] == 2


async def test_strict_refuses_the_file_and_sends_nothing(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", [*chat_lines(2), "{oops"])
    with pytest.raises(UsageError, match=r"in.jsonl:3"):
        await batchchat.arun(src, **run_options(sim, strict=True))
    assert sim.stats()["requests"] == 0


async def test_duplicate_ids_are_refused_before_sending(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", [*chat_lines(3), *chat_lines(1)])
    with pytest.raises(UsageError, match=r"in.jsonl:4: custom_id: 'r0' is also on line 1"):
        await batchchat.arun(src, **run_options(sim))
    assert sim.stats()["requests"] == 0


async def test_concurrency_caps_requests_in_flight(tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = simulator(latency_ms=40)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(40))
    summary = await batchchat.arun(src, **run_options(sim, concurrency=5))
    assert summary.succeeded == 40
    assert 2 <= sim.stats()["max_in_flight"] <= 5


async def test_results_stream_to_disk_as_they_finish(tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = simulator(latency_ms=30)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(30))
    out = tmp_path / "out.jsonl"
    seen_on_disk: list[int] = []

    def on_result(line: dict[str, Any]) -> None:
        seen_on_disk.append(len(out.read_bytes().splitlines()))

    summary = await batchchat.arun(src, out, on_result=on_result, **run_options(sim, concurrency=4))
    assert summary.succeeded == 30
    assert seen_on_disk == sorted(seen_on_disk) and seen_on_disk[0] < 30  # written as each finished
    assert all(n >= i + 1 for i, n in enumerate(seen_on_disk))  # each counted only once on disk


async def test_summary_json_matches_the_file(tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    sim = simulator(fault_rates={"500": 0.3}, seed=3)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(40))
    report = tmp_path / "summary.json"
    summary = await batchchat.arun(src, **run_options(sim, summary_json=report, max_attempts=2))
    data = orjson.loads(report.read_bytes())
    lines = read_output(tmp_path / "in.results.jsonl")
    outcomes = Counter("ok" if x["error"] is None else x["error"]["code"] for x in lines)
    assert data["succeeded"] == summary.succeeded == outcomes["ok"]
    assert data["failed"] == outcomes["http_500"] == sum(data["errors_by_code"].values())
    assert data["succeeded"] + data["failed"] == 40
    assert data["attempts"] == sim.stats()["requests"]
    for key in ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "wall_seconds", "tokens_per_minute"):
        assert key in data
    assert data["prompt_tokens"] == sum(x["usage"]["prompt_tokens"] for x in lines if x["error"] is None)


def test_sync_run_and_iter_results(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(5))
    summary = batchchat.run(src, tmp_path / "o.jsonl", **run_options(sim))
    assert summary.succeeded == 5
    assert sorted(x["custom_id"] for x in batchchat.iter_results(tmp_path / "o.jsonl")) == [f"r{i}" for i in range(5)]


def test_a_library_run_leaves_the_host_s_garbage_collector_alone(tmp_path: Path, sim: Simulator) -> None:
    import gc

    seen: list[tuple[bool, int]] = []
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(10))
    gc.freeze()  # the host's own freeze, which a run must not undo
    frozen = gc.get_freeze_count()
    try:
        batchchat.run(src, tmp_path / "o.jsonl", **run_options(sim),
                      on_result=lambda _: seen.append((gc.isenabled(), gc.get_freeze_count())))
        assert len(seen) == 10 and all(enabled for enabled, _ in seen)  # never paused
        assert gc.get_freeze_count() > 0.9 * frozen  # still frozen (unfreeze() would make it 0)
    finally:
        gc.unfreeze()


def test_the_cli_s_collector_pause_freezes_pauses_and_restores() -> None:
    import gc

    from batchchat.online.collector import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled() and gc.get_freeze_count() > 0
    assert gc.isenabled() and gc.get_freeze_count() == 0


async def test_the_cli_s_periodic_collection_runs_full_collections() -> None:
    import gc

    import anyio

    from batchchat.online.collector import collect_periodically

    collections: list[int] = []
    callback = lambda phase, info: collections.append(info["generation"]) if phase == "stop" else None  # noqa: E731
    gc.callbacks.append(callback)
    try:
        with anyio.move_on_after(0.35):
            await collect_periodically(0.1)
    finally:
        gc.callbacks.remove(callback)
    assert collections.count(2) >= 2
