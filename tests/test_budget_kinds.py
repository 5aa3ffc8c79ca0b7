"""The default mode against each kind of server and a grid of limits, on a virtual clock (`pacing_model`).

Each case runs batchchat's own pacing (`Pacer`, budgets, the retry wait) against the simulator's `Limiter`,
requests reaching it after 0.5-5 ms on the wire and answered after 0.3-2 s, and judges by what the server
admitted: the binding limit used in steady state, the 429s, and the default mode (auto, told nothing) beside
`--adapt off` given the limits. The goals of issue #22: >= 97% of the binding limit, 429s <= 0.5% of the
requests, the default never more than one point below `--adapt off`.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from pacing_model import Server, run_virtual, server_for, simulate

HEAD, TAIL = 3.0, 2.0


def sizes(n: int, low: int, high: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(n)]


def run(server: Server, charges: list[int], adapt: str, concurrency: int = 512, **options: object) -> object:
    limits = {"rpm": server.rpm, "tpm": server.tpm} if adapt == "off" else {}
    return run_virtual(lambda: simulate(server, charges, adapt=adapt, concurrency=concurrency,
                                        **limits, **options))  # type: ignore[arg-type]


CASES = [
    # (id, server, (smallest, largest charge), requests)
    ("6k-tpm-150-1500-bucket", Server(30, 6_000), (150, 1_500), 60),
    ("30-rpm-bucket", Server(30, 1_000_000), (20, 20), 40),
    ("30-rpm-strict", Server(30, 1_000_000, kind="strict"), (20, 20), 40),
    ("300-rpm-15k-tpm-bucket", Server(300, 15_000), (150, 250), 300),
    ("300-rpm-15k-tpm-bucket-admission-headers", Server(300, 15_000, headers="admission"), (150, 250), 300),
    ("300-rpm-15k-tpm-no-retry-after", Server(300, 15_000, retry="none"), (150, 250), 300),
    ("3000-rpm-150k-tpm-bucket", Server(3_000, 150_000), (20, 100), 3_000),
    ("6000-rpm-strict-admission-headers", Server(6_000, 50_000_000, kind="strict", headers="admission"),
     (20, 30), 2_500),
    ("6000-rpm-strict-minute-headers", Server(6_000, 50_000_000, kind="strict"), (20, 30), 4_000),
    ("1200-rpm-calendar-minute", Server(1_200, None, kind="minute", retry="litellm"), (20, 30), 2_400),
    ("30000-rpm-10m-tpm-bucket", Server(30_000, 10_000_000), (100, 400), 8_000),
]


@pytest.mark.parametrize(("server", "span", "n"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_default_mode_uses_the_binding_limit_as_adapt_off_does(server: Server, span: tuple[int, int],
                                                                    n: int) -> None:
    charges = sizes(n, *span)
    concurrency = 2_048 if (server.rpm or 0) > 10_000 else 512
    default = run(server, charges, "auto", concurrency)
    off = run(server, charges, "off", concurrency)
    for outcome in (default, off):
        assert outcome.gave_up == 0  # type: ignore[attr-defined]
        assert 0.97 <= outcome.share(server, HEAD, TAIL) <= 1.01, outcome.rates(HEAD, TAIL)  # type: ignore[attr-defined]
        assert outcome.refused <= max(1, 0.005 * n)  # type: ignore[attr-defined]
    assert default.share(server, HEAD, TAIL) >= off.share(server, HEAD, TAIL) - 0.01  # type: ignore[attr-defined]


def test_strict_windows_at_small_limits_get_what_the_server_can_admit() -> None:
    # 15,000 TPM enforced as 250 tokens in each whole second and requests of 150-250 tokens: only one fits a
    # second, so no client gets more than ~80%; the default mode gets what --adapt off gets
    server = Server(300, 15_000, kind="strict")
    charges = sizes(200, 150, 250)
    default, off = run(server, charges, "auto"), run(server, charges, "off")
    assert default.share(server, HEAD, TAIL) >= off.share(server, HEAD, TAIL) - 0.01  # type: ignore[attr-defined]
    assert default.share(server, HEAD, TAIL) >= 0.78  # type: ignore[attr-defined]


@pytest.mark.parametrize("headers", ["minute", "admission"])
def test_two_processes_on_one_key_share_it_without_429s(headers: str) -> None:
    # each told the key's whole limit: what the server counts beyond a process's own sends is the other's,
    # charged as debt (once: debt charged after a request's admission counts as its own for that request)
    server = Server(6_000, 50_000_000, headers=headers)

    async def both() -> tuple[object, object]:
        limiter = server_for(server)
        runs = [simulate(server, [20] * 1_500, rpm=6_000, latency=(0.1, 0.4), seed=seed, limiter=limiter)
                for seed in (1, 2)]
        first, second = await asyncio.gather(*runs)
        return first, second

    first, second = run_virtual(both)
    admitted = sorted(first.admitted + second.admitted)  # type: ignore[attr-defined]
    span = admitted[-1][0] - admitted[0][0]
    assert len(admitted) / span * 60 >= 0.97 * 6_000
    assert first.refused + second.refused <= 0.005 * 3_000  # type: ignore[attr-defined]
