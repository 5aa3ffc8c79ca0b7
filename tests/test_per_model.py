"""Budgets per model against the real simulator: no head-of-line blocking, a 429 on one model only, limits
per model from flags and config, a gateway's retry header, and the knee of a single queueing worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import chat_lines, read_output, run_options, write_jobs

import batchchat
from batchchat.config.load import build_settings
from batchchat.errors import UsageError
from batchchat.http.outcomes import retry_after
from batchchat.simulator import Simulator

SLOW = "text-embedding-3-small"


def embedding_lines(n: int, prefix: str = "e") -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "url": "/v1/embeddings", "body": {"model": SLOW, "input": f"text {i}"}}
            for i in range(n)]


def interleave(fast: list[Any], slow: list[Any]) -> list[Any]:
    """`slow` spread evenly through `fast`."""
    step = max(1, len(fast) // len(slow))
    out: list[Any] = []
    for i, line in enumerate(fast):
        if i % step == 0 and slow:
            out.append(slow.pop(0))
        out.append(line)
    return out + slow


async def test_a_line_waiting_for_its_models_budget_does_not_hold_back_other_models(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    # the slow model admits 2 a second; the fast one 1,000 a second: 8 slow lines take 3.5 s, 300 fast 0.3 s
    sim = simulator(rpm=60_000, model_limits={SLOW: (120, None)})
    src = write_jobs(tmp_path / "in.jsonl", interleave(chat_lines(300), embedding_lines(8)))
    order: list[str] = []
    summary = await batchchat.arun(src, **run_options(sim, concurrency=64),
                                   on_result=lambda line: order.append(line["custom_id"]))
    assert summary.succeeded == 308
    # in file order, fast lines follow each slow one; one lane per model lets them all finish before the
    # slow model's budget admits its third line
    last_fast = max(i for i, cid in enumerate(order) if cid.startswith("r"))
    slow_done_before = sum(1 for cid in order[:last_fast] if cid.startswith("e"))
    assert slow_done_before <= 3, order
    per_model = sim.stats()["models"]
    assert per_model[SLOW]["rate_limited"] == 0 and per_model["gpt-4o-mini"]["rate_limited"] == 0


async def test_each_model_is_paced_at_its_own_learned_limit(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    # one budget for all would follow whichever model answered last: the small one over-sent, 429s
    sim = simulator(rpm=6_000, model_limits={SLOW: (600, None)})
    src = write_jobs(tmp_path / "in.jsonl", interleave(chat_lines(200), embedding_lines(20)))
    summary = await batchchat.arun(src, **run_options(sim, concurrency=64))
    assert summary.succeeded == 220
    assert sim.stats()["rate_limited"] <= 2


async def test_model_limit_given_is_kept_exactly_with_adapt_off(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    # the server would take 600/min of the slow model; we are told 120/min for it and keep to it
    sim = simulator(rpm=6_000, model_limits={SLOW: (600, None)})
    src = write_jobs(tmp_path / "in.jsonl", embedding_lines(5))
    summary = await batchchat.arun(src, **run_options(sim, adapt="off", rpm=6_000,
                                                      model_limit=[f"{SLOW}=120,"]))
    assert summary.succeeded == 5
    assert summary.wall_seconds >= 1.9  # 4 paced at 2 a second after the first: never faster than the budget


def test_model_limits_from_flags_and_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "batchchat.toml"
    config.write_text('model-limit = ["gpt-4o-mini=30000,150000000", "text-embedding-3-small=,1000000"]\n')
    settings = build_settings({"input": "x.jsonl"}, environ={}, config_file=config)
    assert settings.model_limits == (("gpt-4o-mini", 30000.0, 150000000.0), ("text-embedding-3-small", None, 1e6))
    settings = build_settings({"input": "x.jsonl", "model_limit": ["m=10,"]}, environ={}, config_file=config)
    assert settings.model_limits == (("m", 10.0, None),)  # the flag replaces the file's list
    for bad in ("gpt-4o-mini", "m=,", "m=0,5", "=5,5", "m=a,b"):
        try:
            build_settings({"input": "x.jsonl", "model_limit": [bad]}, environ={})
        except UsageError as exc:
            assert "MODEL=RPM,TPM" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_a_gateways_prefixed_retry_after_is_obeyed() -> None:
    assert retry_after({"llm_provider-retry-after": "60"}) == 60.0
    assert retry_after({"retry-after": "2", "llm_provider-retry-after": "60"}) == 2.0  # the plain one first


async def test_a_single_queueing_worker_without_headers_is_not_driven_into_its_queue(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    # one worker, 4 ms a request, FIFO: more than a few in flight buy nothing but queueing
    sim = simulator(workers=1, latency_ms=4, rate_limit_headers=False)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(800))
    summary = await batchchat.arun(src, **run_options(sim, concurrency=64))
    assert summary.succeeded == 800
    # the old controller grew to the cap of 64 in flight (p50 ~16x the service time)
    assert sim.stats()["max_in_flight"] <= 32
    assert summary.latency_ms_p50 < 100


async def test_models_in_blocks_run_side_by_side(tmp_path: Path, simulator: Callable[..., Simulator]) -> None:
    # 800 lines of a model at 200 a second, then 20 of one at 10 a second: read in file order through one reader,
    # the second block waited behind the first (its queue of 256 full) and started only after 2.7 s; each
    # model's own reader starts both at once, so the slow block is done while the fast one still runs
    sim = simulator(rpm=12_000, model_limits={SLOW: (600, None)})
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(800) + embedding_lines(20))
    out = tmp_path / "out.jsonl"
    order: list[str] = []
    summary = await batchchat.arun(src, out, **run_options(sim, concurrency=256, rpm=12_000,
                                                           model_limit=[f"{SLOW}=600,"]),
                                   on_result=lambda line: order.append(line["custom_id"]))
    assert summary.succeeded == 820 and sim.stats()["rate_limited"] == 0
    last_slow = max(i for i, cid in enumerate(order) if cid.startswith("e"))
    assert last_slow < 700, last_slow  # ~2 s in: about 400 fast lines answered
    ids = [line["custom_id"] for line in read_output(out)]
    assert len(ids) == len(set(ids)) == 820
