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
