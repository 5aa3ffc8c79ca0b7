"""The simulator's limiter and duration format, pinned with a fake clock (no sleeping)."""

from __future__ import annotations

import math
import re

import pytest

from batchchat.simulator.limits import Bucket, Limiter, format_duration

# Go-style durations as OpenAI sends them: 1h2m3.5s, 6m0s, 250ms, 0s.
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> float:
    """What a client parser does with an x-ratelimit-reset-* value."""
    match = _DURATION.match(text)
    assert match and text, text
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0) + int(millis or 0) / 1000


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.02, "20ms"),
        (0.25, "250ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (8.64, "8.64s"),
        (90, "1m30s"),
        (360, "6m0s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert math.isclose(parse_duration(text), round(seconds, 3))


def test_bucket_capacity_is_a_window_of_the_minute_limit() -> None:
    bucket = Bucket(600, 1.0, 0.0)
    assert bucket.capacity == 10 and bucket.rate == 10
    assert Bucket(30, 1.0, 0.0).capacity == 1  # at least one request


def test_limiter_rpm_exact_headers_and_429() -> None:
    clock = FakeClock()
    limiter = Limiter(rpm=600, tpm=None, window=1.0, clock=clock)
    for _ in range(10):
        assert limiter.admit("k", 5).ok
    refused = limiter.admit("k", 5)
    assert not refused.ok and refused.kind == "requests"
    assert math.isclose(refused.wait, 0.1)
    headers = limiter.headers("k").decode()
    assert "x-ratelimit-limit-requests: 600\r\n" in headers
    assert "x-ratelimit-remaining-requests: 590\r\n" in headers
    assert "x-ratelimit-reset-requests: 1s\r\n" in headers
    assert "tokens" not in headers
    clock.now += 0.25  # 2.5 requests refilled
    assert limiter.admit("k", 5).ok
    assert "x-ratelimit-remaining-requests: 591\r\n" in limiter.headers("k").decode()
    assert "x-ratelimit-reset-requests: 850ms\r\n" in limiter.headers("k").decode()


def test_limiter_tpm_and_keys_are_separate() -> None:
    clock = FakeClock()
    limiter = Limiter(rpm=None, tpm=6000, window=1.0, clock=clock)  # 100 tokens per second
    assert limiter.admit("a", 60).ok
    refused = limiter.admit("a", 60)
    assert refused.kind == "tokens" and math.isclose(refused.wait, 0.2)
    assert limiter.admit("b", 60).ok  # another key has its own bucket
    headers = limiter.headers("a").decode()
    assert "x-ratelimit-remaining-tokens: 5940\r\n" in headers
    assert "x-ratelimit-reset-tokens: 600ms\r\n" in headers
    clock.now += 0.2
    assert limiter.admit("a", 60).ok


def test_large_request_needs_an_empty_bucket_and_too_large_is_refused() -> None:
    clock = FakeClock()
    limiter = Limiter(rpm=None, tpm=6000, window=1.0, clock=clock)
    assert limiter.admit("k", 500).ok  # above the 100-token burst, from a full bucket
    refused = limiter.admit("k", 500)
    assert math.isclose(refused.wait, 5.0)
    clock.now += 5.0
    assert limiter.admit("k", 500).ok
    too_large = limiter.admit("k", 6001)
    assert not too_large.ok and math.isinf(too_large.wait)


def test_limit_window_scales_the_burst() -> None:
    limiter = Limiter(rpm=600, tpm=None, window=0.5, clock=FakeClock())
    admitted = sum(limiter.admit("k", 1).ok for _ in range(20))
    assert admitted == 5


def test_headers_off_and_no_limits() -> None:
    assert Limiter(rpm=10, tpm=10, headers=False).headers("k") == b""
    unlimited = Limiter(rpm=None, tpm=None)
    assert unlimited.admit("k", 10**9).ok and unlimited.headers("k") == b""


# ---- the strict kind: a second's worth per whole second of the clock ----------------------------


def test_strict_admits_a_seconds_worth_per_whole_second_and_carries_nothing_over() -> None:
    clock = FakeClock(1000.3)
    limiter = Limiter(rpm=600, tpm=None, clock=clock, kind="strict", header_mode="admission")  # 10 a second
    assert [limiter.admit("k", 1).ok for _ in range(11)] == [True] * 10 + [False]
    refused = limiter.admit("k", 1)
    assert refused.kind == "requests" and math.isclose(refused.wait, 0.7) and refused.used == 10
    headers = limiter.headers("k").decode()
    assert "x-ratelimit-limit-requests: 600\r\n" in headers
    assert "x-ratelimit-remaining-requests: 590\r\n" in headers
    assert "x-ratelimit-reset-requests: 700ms\r\n" in headers
    clock.now = 1000.999
    assert not limiter.admit("k", 1).ok  # the same second: still full
    clock.now = 1001.0
    assert sum(limiter.admit("k", 1).ok for _ in range(20)) == 10
    clock.now = 1002.5
    assert sum(limiter.admit("k", 1).ok for _ in range(3)) == 3
    assert "x-ratelimit-remaining-requests: 597\r\n" in limiter.headers("k").decode()
    clock.now = 1003.2  # the 7 not used in second 1002 are lost: 10 again, not 17
    assert sum(limiter.admit("k", 1).ok for _ in range(20)) == 10
    assert "x-ratelimit-reset-requests: 800ms\r\n" in limiter.headers("k").decode()


def test_strict_large_charge_takes_an_empty_window_and_owes_the_next_ones() -> None:
    clock = FakeClock(1000.5)
    limiter = Limiter(rpm=None, tpm=6000, clock=clock, kind="strict", header_mode="admission")  # 100 tokens/s
    assert limiter.admit("k", 250).ok  # above the allowance, into an empty window
    refused = limiter.admit("k", 10)
    assert math.isclose(refused.wait, 1.5)  # 250 - 2 x 100 = 50 left owed at 1002.0; 50 + 10 fits
    assert "x-ratelimit-reset-tokens: 2.5s\r\n" in limiter.headers("k").decode()
    clock.now = 1001.0
    assert not limiter.admit("k", 10).ok
    clock.now = 1002.0
    assert limiter.admit("k", 50).ok and not limiter.admit("k", 1).ok
    big = limiter.admit("k", 150)
    assert math.isclose(big.wait, 1.0)  # the window must be empty: 1003.0
    assert math.isinf(limiter.admit("k", 6001).wait)


def test_strict_limits_under_60_per_minute_use_longer_windows() -> None:
    clock = FakeClock(1000.5)
    limiter = Limiter(rpm=30, tpm=None, clock=clock, kind="strict")  # one per 2 s window [1000, 1002)
    assert limiter.admit("k", 1).ok
    refused = limiter.admit("k", 1)
    assert math.isclose(refused.wait, 1.5)
    clock.now = 1002.0
    assert limiter.admit("k", 1).ok and not limiter.admit("k", 1).ok


# ---- the minute kind: a calendar-minute counter (LiteLLM) ---------------------------------------


def test_minute_counts_per_calendar_minute_without_reset_headers() -> None:
    clock = FakeClock(1000.0)  # the minute [960, 1020)
    limiter = Limiter(rpm=5, tpm=100, clock=clock, kind="minute")
    assert [limiter.admit("k", 10).ok for _ in range(6)] == [True] * 5 + [False]
    refused = limiter.admit("k", 10)
    assert refused.kind == "requests" and math.isclose(refused.wait, 20.0) and refused.used == 5
    headers = limiter.headers("k").decode()
    assert headers == (
        "x-ratelimit-limit-requests: 5\r\nx-ratelimit-limit-tokens: 100\r\n"
        "x-ratelimit-remaining-requests: 0\r\nx-ratelimit-remaining-tokens: 50\r\n"
    )
    assert "reset" not in headers
    clock.now = 1019.99
    assert not limiter.admit("k", 10).ok
    clock.now = 1020.0  # a new minute starts from zero, whatever was refused before
    assert limiter.admit("k", 60).ok
    tokens = limiter.admit("k", 41)
    assert tokens.kind == "tokens" and math.isclose(tokens.wait, 60.0) and tokens.used == 60
    assert limiter.admit("k", 40).ok
    assert math.isinf(limiter.admit("k", 101).wait)
    assert math.isclose(limiter.minute_left(), 60.0)
    clock.now = 1075.5
    assert math.isclose(limiter.minute_left(), 4.5)


def test_unknown_limit_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="limit kind"):
        Limiter(rpm=1, tpm=None, kind="sliding")


# ---- limits per model -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bucket", "strict", "minute"])
def test_each_model_has_its_own_limits_and_headers(kind: str) -> None:
    clock = FakeClock(1000.0)
    limiter = Limiter(
        rpm=600,
        tpm=60_000,
        clock=clock,
        kind=kind,
        model_limits={"gpt-4o": (60, None), "o3": (None, None), "gpt-5": (None, 6000)},
    )
    burst = 60 if kind == "minute" else 1  # the minute kind admits the whole minute's worth at once
    assert sum(limiter.admit("k", 10, "gpt-4o").ok for _ in range(100)) == burst
    refused = limiter.admit("k", 10, "gpt-4o")
    assert not refused.ok and refused.kind == "requests" and refused.limit == 60
    assert limiter.admit("k", 10, "gpt-4o-mini").ok  # every other model: the default limits, its own pool
    assert limiter.admit("other-key", 10, "gpt-4o").ok  # and each key its own
    headers = limiter.headers("k", "gpt-4o").decode()
    assert "x-ratelimit-limit-requests: 60\r\n" in headers and "tokens" not in headers
    assert f"x-ratelimit-remaining-requests: {60 - burst}\r\n" in headers
    headers = limiter.headers("k", "gpt-4o-mini").decode()
    assert "x-ratelimit-limit-requests: 600\r\n" in headers and "x-ratelimit-limit-tokens: 60000\r\n" in headers
    assert "x-ratelimit-remaining-tokens: 59990\r\n" in headers
    assert all(limiter.admit("k", 10**6, "o3").ok for _ in range(100)) and limiter.headers("k", "o3") == b""
    assert limiter.headers("k", "gpt-5").decode().startswith("x-ratelimit-limit-tokens: 6000\r\n")
    assert limiter.limits_for("gpt-5") == (None, 6000) and limiter.limits_for("anything") == (600, 60_000)


def test_model_limits_alone_enable_the_limiter() -> None:
    limiter = Limiter(rpm=None, tpm=None, clock=FakeClock(), model_limits={"gpt-4o": (60, None)})
    assert limiter.enabled
    assert limiter.admit("k", 5, "gpt-4o").ok and not limiter.admit("k", 5, "gpt-4o").ok
    assert all(limiter.admit("k", 5, "gpt-4o-mini").ok for _ in range(50))
    assert limiter.headers("k", "gpt-4o-mini") == b""


# ---- header modes: what x-ratelimit-* describe -----------------------------------------------------


def test_minute_headers_describe_a_minute_bucket_while_a_second_is_full() -> None:
    # OpenAI's shape (the default): admission per whole second, headers from a per-minute bucket refilled
    # continuously: most of the minute remains while the second refuses
    clock = FakeClock(1000.0)
    limiter = Limiter(rpm=600, tpm=60_000, clock=clock, kind="strict")
    assert limiter.header_mode == "minute"
    assert [limiter.admit("k", 100).ok for _ in range(11)] == [True] * 10 + [False]
    headers = limiter.headers("k").decode()
    assert "x-ratelimit-remaining-requests: 590\r\n" in headers
    assert "x-ratelimit-remaining-tokens: 59000\r\n" in headers
    assert "x-ratelimit-reset-requests: 1s\r\n" in headers  # 10 held, refilled at 10 a second
    assert "x-ratelimit-reset-tokens: 1s\r\n" in headers
    clock.now = 1000.5  # the bucket refills continuously: 5 requests and 500 tokens back
    headers = limiter.headers("k").decode()
    assert "x-ratelimit-remaining-requests: 595\r\n" in headers and "x-ratelimit-reset-requests: 500ms\r\n" in headers
    assert not limiter.admit("k", 100).ok  # ...while the second's window is still full


def test_minute_headers_hold_what_a_second_scale_bucket_has_released() -> None:
    clock = FakeClock(1000.0)
    limiter = Limiter(rpm=6000, tpm=None, clock=clock)  # a bucket of 100 (1 s); headers: a bucket of 6,000
    assert sum(limiter.admit("k", 1).ok for _ in range(150)) == 100
    clock.now = 1000.5
    assert sum(limiter.admit("k", 1).ok for _ in range(60)) == 50
    headers = limiter.headers("k").decode()
    # 150 admitted, 50 refilled at 100/s: 100 held, reset 1 s; the admitting bucket is full again
    assert "x-ratelimit-remaining-requests: 5900\r\n" in headers and "x-ratelimit-reset-requests: 1s\r\n" in headers
    admission = Limiter(rpm=6000, tpm=None, clock=clock, header_mode="admission")
    assert admission.admit("k", 1).ok
    assert "x-ratelimit-remaining-requests: 5999\r\n" in admission.headers("k").decode()


def test_a_calendar_minute_is_its_own_minute_counter_in_either_mode() -> None:
    clock = FakeClock(1000.0)
    for mode in ("minute", "admission"):
        limiter = Limiter(rpm=2, tpm=None, clock=clock, kind="minute", header_mode=mode)
        assert limiter.admit("k", 1).ok
        headers = limiter.headers("k").decode()
        assert "x-ratelimit-remaining-requests: 1\r\n" in headers and "reset" not in headers


def test_unknown_header_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="header mode"):
        Limiter(rpm=1, tpm=None, header_mode="second")
