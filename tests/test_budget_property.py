"""Property: whatever the limits, the request sizes and the latencies, the default mode's admitted rate stays
within [97%, 100%] of the binding limit in steady state, with 429s at most 0.5% of the requests (a window
counter may refuse the request that ends a window over: a strict second at most once a second, a calendar
minute once a minute boundary; the budget does not lock onto a window's phase).

Generated: limits from 30 RPM / 6,000 TPM to 30,000 RPM / 10,000,000 TPM, charges up to a sizeable share of a
second's token budget (at 6,000 TPM a request may be 15 seconds of it), latencies from 50 ms to 10 s, the
server kinds whose own enforcement lets a client reach the limit (a bucket with a one-second burst, a strict
one-second window for requests small against a second's allowance, a calendar minute) with either header
shape and each retry style. The server is the simulator's `Limiter` on a virtual clock (`pacing_model`).
"""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st
from pacing_model import Server, run_virtual, simulate

SECONDS = 30.0  # of traffic at the binding limit


@st.composite
def cases(draw: st.DrawFn) -> tuple[Server, list[int], tuple[float, float], int]:
    kind = draw(st.sampled_from(["bucket", "strict", "minute"]))
    headers = draw(st.sampled_from(["minute", "admission"]))
    retry = "litellm" if kind == "minute" else draw(st.sampled_from(["openai", "none"]))
    if kind == "strict":
        # a window admits at most a second's worth and loses what is left: only whole requests a second (a
        # multiple of 60 a minute) and requests small against a second's tokens can fill it, by any client
        rpm, tpm = 60 * draw(st.integers(1, 500)), 60 * draw(st.integers(100, 166_666))
    else:
        rpm, tpm = draw(st.integers(30, 30_000)), draw(st.integers(6_000, 10_000_000))
    per_second = tpm / 60.0
    largest = draw(st.integers(1, min(tpm, int(per_second * 15))))
    if kind == "strict":
        largest = max(1, min(largest, int(per_second * 0.01)))
    elif kind == "minute":  # likewise a calendar minute, whose last request that does not fit waits for the next
        largest = max(1, min(largest, int(tpm * 0.01)))
    smallest = draw(st.integers(1, largest))
    # one limit binds every request (at the boundary each request's turn is the same at both)
    boundary = tpm / rpm  # tokens a request may have while the request limit binds
    if draw(st.booleans()) and largest > boundary:
        smallest = max(smallest, math.ceil(boundary))
    else:
        largest = max(1, min(largest, math.floor(boundary)))
        smallest = min(smallest, largest)
    low = draw(st.floats(0.05, 2.0))
    latency = (low, low * draw(st.floats(1.0, 5.0)))
    mean = (smallest + largest) / 2.0
    rps = min(rpm / 60.0, per_second / mean)  # the binding rate, in requests a second
    n = int(min(1_500, max(30, rps * SECONDS)))
    rng = random.Random(draw(st.integers(0, 2**16)))
    charges = [rng.randint(smallest, largest) for _ in range(n)]
    concurrency = math.ceil(rps * latency[1] * 2) + 16
    return Server(rpm, tpm, kind=kind, headers=headers, retry=retry), charges, latency, concurrency


@given(cases())
def test_the_default_mode_keeps_to_the_binding_limit(case: tuple[Server, list[int], tuple[float, float], int]) -> None:
    server, charges, latency, concurrency = case
    out = run_virtual(lambda: simulate(server, charges, latency=latency, concurrency=concurrency))
    span = out.admitted[-1][0] - out.admitted[0][0]
    share = out.share(server, head=min(3.0, span / 5), tail=min(2.0, span / 5))
    assert out.gave_up == 0
    # at most the limit, give or take one request's share of the work measured (events are whole requests)
    assert 0.97 <= share <= 1.01 + max(charges) / sum(charges), (share, out.rates(), out.refused)
    allowed = max(1, 0.005 * len(charges))
    if server.kind == "strict":
        # a window whose tokens are not a whole number of requests ends each second a fraction over: paced at
        # the limit, its last request is refused until the next second (nothing lost: the second was full)
        allowed = max(allowed, 2 * (span + 1))
    elif server.kind == "minute":
        # paced at the limit, a calendar minute's count ends a request over (or under) the limit: the last one is
        # refused until the minute turns (nothing lost: the minute was full), at most one a minute boundary
        allowed = max(allowed, 2 * (span // 60 + 1))
    assert out.refused <= allowed, out.refused
