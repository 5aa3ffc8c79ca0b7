"""Every fault kind, observed from a real HTTP client on loopback; seeded fault plans; saturation."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchchat.simulator import FAULT_KINDS, Simulator, SimulatorConfig
from batchchat.simulator.faults import FaultPlan

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
def staged() -> Iterator[Any]:
    """A simulator whose requests get FAULT_KINDS in order, then answer normally."""
    sequence = ("ok", *FAULT_KINDS)
    with Simulator.in_thread(SimulatorConfig(fault_sequence=sequence)) as sim:
        yield sim


def post(sim: Simulator, timeout: float = 5.0, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=sim.base_url, timeout=timeout) as client:
        return client.post("/chat/completions", json=BODY, headers=headers)


def test_every_fault_kind_in_sequence(staged: Simulator) -> None:
    sim = staged
    assert post(sim).status_code == 200  # "ok"
    seen: dict[str, Any] = {}
    for kind in FAULT_KINDS:
        try:
            seen[kind] = post(sim, timeout=0.3, authorization="Bearer sk-very-secret")
        except httpx.HTTPError as exc:
            seen[kind] = exc
    for code in ("500", "502", "503"):
        r = seen[code]
        assert r.status_code == int(code) and "retry-after" not in r.headers
        assert "message" in r.json()["error"]
    assert seen["503_retry_after"].status_code == 503 and seen["503_retry_after"].headers["retry-after"] == "1"
    plain = seen["429"]
    assert plain.status_code == 429 and plain.json()["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" not in plain.headers
    r = seen["429_retry_after"]
    assert r.status_code == 429 and r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "1000"
    assert seen["403"].status_code == 403 and seen["403"].json()["error"]["code"] == "permission_denied"
    assert isinstance(seen["drop"], httpx.RemoteProtocolError)
    assert isinstance(seen["hang"], httpx.ReadTimeout)
    assert isinstance(seen["truncate"], httpx.RemoteProtocolError)
    r = seen["non_json"]
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError):
        r.json()
    r = seen["echo_headers"]
    assert r.status_code == 400 and "authorization: Bearer sk-very-secret" in r.json()["error"]["message"]
    r = seen["insufficient_quota"]
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert post(sim).status_code == 200  # the sequence is over, no rates: normal again
    stats = sim.stats()
    assert stats["requests"] == len(FAULT_KINDS) + 2
    assert stats["faults"] == dict.fromkeys(sorted(FAULT_KINDS), 1)
    assert stats["in_flight"] == 0  # the hung request went when the client gave up


def test_truncate_announces_full_length_over_raw_socket() -> None:
    with Simulator.in_thread(SimulatorConfig(fault_sequence=("truncate",))) as sim:
        with socket.create_connection(("127.0.0.1", sim.port), timeout=2) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"content-length")).split(b":")[1])
        assert head.startswith(b"HTTP/1.1 200") and 0 < len(body) < length


def test_same_seed_same_faults() -> None:
    rates = {"500": 0.2, "drop": 0.1, "429_retry_after": 0.1}
    first = [FaultPlan(3, rates).fault_for(k) for k in range(500)]
    assert first == [FaultPlan(3, rates).fault_for(k) for k in range(500)]
    assert first != [FaultPlan(4, rates).fault_for(k) for k in range(500)]
    share = sum(kind is not None for kind in first) / len(first)
    assert 0.3 < share < 0.5
    plan = FaultPlan(0, {"503": 1.0}, ("ok", "500"))
    assert [plan.fault_for(k) for k in range(4)] == [None, "500", "503", "503"]


def test_fault_rates_over_http_are_reproducible() -> None:
    cfg = SimulatorConfig(seed=11, fault_rates={"500": 0.3, "503": 0.2})
    codes = []
    for _ in range(2):
        with Simulator.in_thread(cfg) as sim, httpx.Client(base_url=sim.base_url) as client:
            codes.append([client.post("/chat/completions", json=BODY).status_code for _ in range(40)])
            assert sum(sim.stats()["faults"].values()) == sum(c != 200 for c in codes[-1])
    assert codes[0] == codes[1] and {500, 503, 200} == set(codes[0])


def test_reset_replays_the_sequence() -> None:
    with Simulator.in_thread(SimulatorConfig(fault_sequence=("500", "ok"))) as sim:
        assert post(sim).status_code == 500 and post(sim).status_code == 200
        sim.reset_stats()
        assert post(sim).status_code == 500


def test_close_is_prompt_with_hung_requests() -> None:
    sim = Simulator.in_thread(SimulatorConfig(fault_rates={"hang": 1.0}))
    socks = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", sim.port), timeout=2)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        socks.append(sock)
    deadline = time.monotonic() + 2
    while sim.stats()["in_flight"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.stats()["in_flight"] == 3
    started = time.monotonic()
    sim.close()
    assert time.monotonic() - started < 1.0
    for sock in socks:
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""
        sock.close()


def test_overload_answers_503_above_overload_at() -> None:
    cfg = SimulatorConfig(fault_sequence=("hang", "hang"), overload_at=2)
    with Simulator.in_thread(cfg) as sim:
        socks = []
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", sim.port), timeout=2)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            socks.append(sock)
        deadline = time.monotonic() + 2
        while sim.stats()["in_flight"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = post(sim)
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
        for sock in socks:
            sock.close()
        deadline = time.monotonic() + 2
        while sim.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert post(sim).status_code == 200
        assert sim.stats()["max_in_flight"] == 3


def test_insufficient_quota_has_openais_body_and_no_retry_header() -> None:
    for style in ("openai", "litellm", "none"):
        cfg = SimulatorConfig(fault_sequence=("insufficient_quota",), retry_after_style=style, rpm=600)
        with Simulator.in_thread(cfg) as sim:
            r = post(sim)
            assert r.status_code == 429
            assert r.json() == {
                "error": {
                    "message": "You exceeded your current quota, please check your plan and billing details. For more "
                    "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                    "type": "insufficient_quota",
                    "param": None,
                    "code": "insufficient_quota",
                }
            }
            assert not {"retry-after", "retry-after-ms", "llm_provider-retry-after"} & set(r.headers)
            assert r.headers["x-ratelimit-limit-requests"] == "600" and r.headers["x-request-id"].startswith("req_")
            assert sim.stats()["faults"] == {"insufficient_quota": 1} and sim.stats()["rate_limited"] == 0
            assert post(sim).status_code == 200


def test_insufficient_quota_comes_last_so_seeded_plans_keep_their_draws() -> None:
    rates = {"500": 0.2, "drop": 0.1, "429_retry_after": 0.1, "echo_headers": 0.05}
    # Drawn by the plan before insufficient_quota existed (seed 3): adding a kind at the end must not move these.
    before = [None, None, "429_retry_after", "500", "500", None, None, "drop", None, "500", "500", None, None, None,
              None, "500", None, "500", "500", None, "429_retry_after", "500", "drop", None]
    assert [FaultPlan(3, rates).fault_for(k) for k in range(24)] == before
    assert FAULT_KINDS[-1] == "insufficient_quota"
    with_quota = [FaultPlan(3, {**rates, "insufficient_quota": 0.3}).fault_for(k) for k in range(24)]
    assert all(new == old for new, old in zip(with_quota, before, strict=True) if old is not None)
    assert "insufficient_quota" in with_quota
