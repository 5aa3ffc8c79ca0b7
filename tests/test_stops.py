"""Stops a user can act on (#22 item 4): "nothing can succeed" judged per endpoint path and model, an endpoint
that never answers stopped like a closed port, and hung attempts at the tail retried in bounded time. Real CLI
processes against the simulator where exit codes matter; the simulator's own counts as the judge."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import chat_jobs, cli, parse_output, run_args, write_jsonl

from batchchat.errors import ExitCode
from batchchat.http.outcomes import Failed, Outcome, Retryable, Success
from batchchat.input.parse import Job
from batchchat.online.health import SILENT_TIMEOUTS, EndpointHealth
from batchchat.simulator import Simulator

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
OK = Success(200, {}, b"{}", None, {})
TYPO = "gpt-4o-mnii"
NO_MODEL = Failed("http_404", f"HTTP 404: The model `{TYPO}` does not exist or you do not have access to it.", 404)


def typo_file(path: Path) -> Path:
    """40 lines for a mistyped model first, then 160 good ones (the issue's file)."""
    bad = [dict(job, model=TYPO) for job in chat_jobs(40, prefix="bad")]
    return write_jsonl(path, bad + chat_jobs(160, prefix="good"))


# -- one mistyped model: its lines fail, the others run ---------------------------------------------------------

def test_a_mistyped_model_fails_its_own_lines_and_the_others_run(tmp_path: Path,
                                                                 simulator: Callable[..., Simulator]) -> None:
    sim = simulator(latency_ms=200)  # answers take a while; the 404s come at once, before any answer
    src, out = typo_file(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    done = cli(*run_args(sim.base_url, src, out), timeout=60)
    assert done.returncode == ExitCode.FAILURES == 1, done.stderr  # before: exit 7, the good lines never sent
    lines = {line["custom_id"]: line for line in parse_output(out)}
    assert len(lines) == 200
    assert all(lines[f"good{i}"]["error"] is None for i in range(160))
    assert {lines[f"bad{i}"]["error"]["code"] for i in range(40)} == {"http_404"}
    stats = sim.stats()
    assert stats["responses"].get("200") == 160
    assert stats["responses"].get("404", 0) <= 32 + 4  # its first attempts (and what was in flight), not all 40
    assert f"model '{TYPO}' at {sim.base_url}/chat/completions: the first" in done.stderr
    assert "its other lines get this error without being sent" in done.stderr

    # a rerun has only the mistyped model left: nothing it sends can succeed, and it says which model
    again = cli(*run_args(sim.base_url, src, out), timeout=60)
    assert again.returncode == ExitCode.DEAD_ENDPOINT, again.stderr
    assert f"attempts for model '{TYPO}' all failed the same way" in again.stderr
    assert len(parse_output(out)) == 200  # one line per id, the good ones kept


def test_an_embedding_model_the_server_lacks_fails_its_lines_and_chat_runs(tmp_path: Path,
                                                                       simulator: Callable[..., Simulator]) -> None:
    sim = simulator(models=("gpt-4o-mini",))  # serves chat for this model only: the embedding model is unknown
    embeddings = [{"custom_id": f"e{i}", "url": EMBED, "body": {"model": "text-embedding-3-small", "input": "x"}}
                  for i in range(40)]
    src = write_jsonl(tmp_path / "in.jsonl", embeddings + chat_jobs(100))
    done = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl"), timeout=60)
    assert done.returncode == 1, done.stderr
    lines = parse_output(tmp_path / "out.jsonl")
    assert sum(line["error"] is None for line in lines) == 100 and len(lines) == 140


def test_when_every_model_fails_alike_the_run_stops_with_exit_7(tmp_path: Path, sim: Simulator) -> None:
    jobs = [dict(job, model=f"typo-{i % 2}") for i, job in enumerate(chat_jobs(300))]
    src = write_jsonl(tmp_path / "in.jsonl", jobs)
    done = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl"), timeout=60)
    assert done.returncode == ExitCode.DEAD_ENDPOINT, done.stderr
    assert "every endpoint and model this run sends failed its first" in done.stderr
    assert "model 'typo-0'" in done.stderr and "model 'typo-1'" in done.stderr
    assert sim.stats()["requests"] < 150  # 2 x 32 and what was in flight


# -- the health's promise, over interleavings -------------------------------------------------------------------

def _job(model: str, path: str = CHAT) -> Job:
    return Job(custom_id="x", line_no=1, url=path, body={"model": model})


@given(st.lists(st.sampled_from(["good", "bad"]), min_size=1, max_size=300), st.integers(8, 32))
def test_a_model_that_answers_is_never_stopped_by_one_that_does_not(order: list[str], threshold: int) -> None:
    stopped: list[str] = []
    told: list[str] = []
    health = EndpointHealth(threshold, stopped.append, planned={(CHAT, "good"), (CHAT, "bad")},
                            on_group_dead=told.append)
    for model in order:
        outcome: Outcome = OK if model == "good" else NO_MODEL
        health.observe(outcome, CHAT, model)
    assert not stopped
    bad = order.count("bad")
    assert (health.dead_sender(_job("bad")) is not None) == (bad >= threshold)
    assert health.dead_sender(_job("good")) is None
    assert len(told) == (bad >= threshold)


def test_a_dead_group_gives_its_failure_to_its_unsent_lines() -> None:
    health = EndpointHealth(8, lambda message: None, planned={(CHAT, TYPO), (CHAT, "gpt-4o-mini")},
                            url_for=lambda path: "http://h" + path)
    for _ in range(8):
        health.observe(NO_MODEL, CHAT, TYPO)
    dead = health.dead_sender(_job(TYPO))
    assert dead is not None and health.any_dead
    assert dead.dead is not None and dead.dead.reason == "http_404" and dead.dead.status is None  # nothing answered
    assert dead.dead.message.startswith(f"not sent: the first 8 attempts for model '{TYPO}' at "
                                        "http://h/v1/chat/completions all failed the same way: HTTP 404: The model")
    assert health.dead_sender(_job(TYPO, EMBED)) is None  # another path: its own judgement


def test_one_group_that_answers_otherwise_stays_alive() -> None:
    for first in (OK, Retryable("http_500", "HTTP 500: boom", 500), Retryable("rate_limited", "HTTP 429", 429),
                  Failed("http_400", "HTTP 400: other", 400)):
        health = EndpointHealth(8, lambda message: None, planned={(CHAT, TYPO)})
        health.observe(first, CHAT, TYPO)
        for _ in range(40):
            health.observe(NO_MODEL, CHAT, TYPO)
        assert health.dead_sender(_job(TYPO)) is None and not health.tripped


# -- an endpoint where every request hangs ----------------------------------------------------------------------

def test_timeouts_in_a_row_with_no_answer_at_all_stop_the_run() -> None:
    stopped: list[str] = []
    health = EndpointHealth(32, stopped.append, url_for=lambda path: "http://h" + path)
    hung = Retryable("timeout", "timeout: no answer within 2 s")
    for _ in range(SILENT_TIMEOUTS - 1):
        health.observe(hung, CHAT, "m")
    assert not stopped
    health.observe(hung, CHAT, "m")
    assert len(stopped) == 1
    assert stopped[0].startswith(f"the first {SILENT_TIMEOUTS} attempts all timed out at http://h/v1/chat/"
                                 "completions (timeout: no answer within 2 s), and nothing has answered")


def test_timeouts_after_an_answer_are_a_slow_server_not_a_dead_one() -> None:
    health = EndpointHealth(32, lambda message: (_ for _ in ()).throw(AssertionError(message)))
    hung = Retryable("timeout", "timeout: no answer within 2 s")
    health.observe(hung, CHAT, "m")
    health.observe(Retryable("http_503", "HTTP 503: busy", 503), CHAT, "m")  # an answer: the server is there
    for _ in range(50):
        health.observe(hung, CHAT, "m")
    assert not health.tripped


def test_an_endpoint_where_every_request_hangs_stops_with_exit_7(tmp_path: Path,
                                                                simulator: Callable[..., Simulator]) -> None:
    sim = simulator(fault_rates={"hang": 1.0})
    src = write_jsonl(tmp_path / "in.jsonl", chat_jobs(20))
    started = time.monotonic()
    # before: still going after 122 s (every line tried 5 times, one at a time); now the first timeouts stop it
    done = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl", "--timeout", "2", "--grace", "1"), timeout=60)
    assert done.returncode == ExitCode.DEAD_ENDPOINT == 7, done.stderr
    assert time.monotonic() - started < 30
    assert f"attempts all timed out at {sim.base_url}/chat/completions (timeout: no answer within 2 s)" in done.stderr
    assert "nothing has answered in the" in done.stderr
    assert "Traceback" not in done.stderr


# -- a few hung attempts at the tail ----------------------------------------------------------------------------

def test_a_few_hung_requests_are_retried_and_the_run_finishes(tmp_path: Path,
                                                             simulator: Callable[..., Simulator]) -> None:
    hung = 3
    sim = simulator(latency_ms=20, jitter=0.5, fault_sequence=("ok",) * 190 + ("hang",) * hung)
    src, out = write_jsonl(tmp_path / "in.jsonl", chat_jobs(200)), tmp_path / "out.jsonl"
    started = time.monotonic()
    # before: the hung attempts held the run for the whole --timeout (60 s here, 600 by default)
    done = cli(*run_args(sim.base_url, src, out, "--timeout", "60", progress="log"), "--log-interval", "1",
               timeout=45)
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert wall < 30, wall
    lines = parse_output(out)
    assert len(lines) == 200 and all(line["error"] is None for line in lines)
    stats = sim.stats()
    assert stats["faults"] == {"hang": hung} and stats["responses"]["200"] == 200 and stats["requests"] == 200 + hung
    retried = sorted(line["custom_id"] for line in lines if line["attempts"] == 2)
    assert len(retried) == hung
    # the log named who waited, and for how long, before giving them up
    waiting = [row for row in done.stderr.splitlines() if f"{hung} waiting > 5s: " in row]
    assert waiting and all(custom_id in waiting[-1] for custom_id in retried), done.stderr
    assert f"{hung} attempts got no answer within the attempt timeout (10 s" in done.stderr
