"""A dead or wrong endpoint (#15 items 3, 4, 11): stop fast with exit 7 and the URL tried; base URLs as the
OpenAI SDK takes them; a gateway's request id kept; a missing key said at the start."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import TEST_KEY, chat_lines, read_output, run_options, write_jobs

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import FAST_RETRIES, cli, cli_env, parse_output, run_args

import batchchat
from batchchat.config.settings import EndpointConfig
from batchchat.errors import ExitCode
from batchchat.http.outcomes import Failed, Retryable, Success, classify
from batchchat.online.health import EndpointHealth, dead_threshold
from batchchat.secrets import Redactor
from batchchat.simulator import Simulator

CHAT_BODY = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


@contextmanager
def stub_server(answer: Callable[[str], tuple[int, dict[str, Any], dict[str, str]]]) -> Iterator[tuple[str, list]]:
    """A tiny HTTP server on loopback: `answer(path)` gives (status, JSON body, headers); yields (root URL,
    the paths asked for)."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            paths.append(self.path)
            status, body, headers = answer(self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- item 3: fail fast

def test_the_threshold_follows_concurrency() -> None:
    assert [dead_threshold(c) for c in (1, 8, 16, 64, 500)] == [8, 8, 16, 32, 32]


def test_health_trips_once_on_identical_failures_from_the_start() -> None:
    calls: list[str] = []
    health = EndpointHealth(8, calls.append, url_for=lambda path: "http://h" + path)
    refused = Retryable("connection", "ClientConnectorError: refused")
    for _ in range(7):
        health.observe(refused, "/v1/chat/completions")
    assert not calls
    health.observe(refused, "/v1/chat/completions")
    health.observe(refused, "/v1/chat/completions")
    assert len(calls) == 1 and health.tripped
    assert "at http://h/v1/chat/completions: ClientConnectorError: refused" in calls[0]


def test_health_is_disarmed_by_an_answer_or_a_different_failure() -> None:
    ok = Success(200, {}, b"{}", None, {})
    for first in (ok, Retryable("http_500", "HTTP 500: boom", 500), Retryable("timeout", "timeout: no answer"),
                  Failed("http_404", "HTTP 404: other", 404)):
        health = EndpointHealth(8, lambda _message: pytest.fail("tripped"))
        health.observe(first, "/v1/chat/completions")
        for _ in range(50):  # a burst of resets after it: a blip, not a dead endpoint
            health.observe(Retryable("connection", "reset"), "/v1/chat/completions")
        assert not health.tripped


def test_a_closed_port_stops_the_run_with_exit_7_naming_the_url(tmp_path: Path) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(300))
    url = f"http://127.0.0.1:{closed_port()}/v1"
    proc = cli(*run_args(url, src, tmp_path / "out.jsonl", "--summary-json", tmp_path / "s.json"), timeout=60)
    assert proc.returncode == ExitCode.DEAD_ENDPOINT == 7, proc.stderr
    assert f"at {url}/chat/completions" in proc.stderr and "nothing can succeed there" in proc.stderr
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["attempts"] < 200, summary  # before: 300 lines x 5 attempts = 1,500
    assert "Traceback" not in proc.stderr


def test_a_base_url_that_answers_404_to_everything_stops_with_a_hint(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(100))
    root = sim.base_url.removesuffix("/v1")  # the base is used as given: /chat/completions is not there
    summary = batchchat.run(src, tmp_path / "out.jsonl", **run_options(sim, base_url=root))
    assert summary.exit_code == 7
    assert f"at {root}/chat/completions: HTTP 404" in summary.stopped and "ending in /v1" in summary.stopped
    assert sim.stats()["requests"] < 100


def test_the_same_client_error_on_every_request_stops_the_run(tmp_path: Path) -> None:
    refusal = {"error": {"message": "No connected db.", "type": "no_db_connection", "code": "400"}}
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(100))
    with stub_server(lambda path: (400, refusal, {})) as (root, paths):
        summary = batchchat.run(src, tmp_path / "out.jsonl", base_url=root + "/v1", api_key=TEST_KEY,
                                progress="off", concurrency=4)
    assert summary.exit_code == 7 and "HTTP 400: No connected db." in summary.stopped, summary
    assert len(paths) < 30  # 8 in a row (at 4 in flight) and what was in flight


def test_transient_blips_among_successes_do_not_stop_a_run(tmp_path: Path,
                                                          simulator: Callable[..., Simulator]) -> None:
    sim = simulator(fault_sequence=("ok",) + ("drop",) * 40)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(60))
    summary = batchchat.run(src, tmp_path / "out.jsonl", **run_options(sim, concurrency=8, max_attempts=8))
    assert summary.exit_code == 0 and summary.succeeded == 60, summary


def test_a_missing_key_is_said_at_the_start(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(3))
    proc = cli(*run_args(sim.base_url, src, tmp_path / "out.jsonl"), env=cli_env(key=None))
    assert proc.returncode == 0, proc.stderr  # the simulator wants no key: a warning, not an error
    assert "warning: OPENAI_API_KEY is not set" in proc.stderr.splitlines()[0]
    with_key = cli(*run_args(sim.base_url, src, tmp_path / "out2.jsonl"))
    assert "is not set" not in with_key.stderr


# -- item 4: base URLs as the SDK takes them

@pytest.mark.parametrize(("base", "path", "url"), [
    ("https://api.openai.com/v1", "/v1/chat/completions", "https://api.openai.com/v1/chat/completions"),
    ("http://h/v1/", "/v1/embeddings", "http://h/v1/embeddings"),
    ("https://generativelanguage.googleapis.com/v1beta/openai/", "/v1/chat/completions",
     "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"),
    ("http://127.0.0.1:4000", "/v1/responses", "http://127.0.0.1:4000/responses"),
])
def test_the_base_url_is_used_as_given(base: str, path: str, url: str) -> None:
    assert EndpointConfig(base_url=base).url_for(path) == url


def test_a_base_without_v1_reaches_its_own_path_and_the_url_is_said(tmp_path: Path) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(3))
    with stub_server(lambda path: (200, CHAT_BODY, {})) as (root, paths):
        base = root + "/v1beta/openai/"
        proc = cli(*run_args(base, src, tmp_path / "out.jsonl", progress="log"))
    assert proc.returncode == 0, proc.stderr
    assert paths == ["/v1beta/openai/chat/completions"] * 3
    url = f"{root}/v1beta/openai/chat/completions"
    assert f"endpoint   {url}" in proc.stdout  # the summary
    first_log = next(line for line in proc.stderr.splitlines() if " batchchat: " in line)
    assert f"to {url}" in first_log


# -- item 11: a gateway's request id

@pytest.mark.parametrize("header", ["x-litellm-call-id", "request-id", "apim-request-id"])
def test_a_gateway_request_id_is_kept(header: str) -> None:
    outcome = classify(200, b"{}", {header: "gw-123"}, Redactor(None), EndpointConfig())
    assert isinstance(outcome, Success) and outcome.request_id == "gw-123"
    both = classify(200, b"{}", {header: "gw-123", "x-request-id": "req-1"}, Redactor(None), EndpointConfig())
    assert both.request_id == "req-1"  # x-request-id first when it is there


def test_litellm_call_id_reaches_the_output_line(tmp_path: Path) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(2))
    with stub_server(lambda path: (200, CHAT_BODY, {"x-litellm-call-id": "litellm-abc"})) as (root, _paths):
        proc = cli("run", src, "-o", tmp_path / "out.jsonl", "--base-url", root + "/v1", "--progress", "off",
                   *FAST_RETRIES)
    assert proc.returncode == 0, proc.stderr
    assert [line["response"]["request_id"] for line in parse_output(tmp_path / "out.jsonl")] == ["litellm-abc"] * 2
    assert read_output(tmp_path / "out.jsonl")[0]["error"] is None
