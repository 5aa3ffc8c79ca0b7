"""Server-side counters, served as JSON by `GET /stats` and zeroed by `POST /stats/reset`.

Fields: `requests` (received, all routes but /stats), `responses` {status: count}, `faults`
{kind: count}, `tokens_admitted` (charged by the limiter), `prompt_tokens`, `completion_tokens`
(of 200 answers), `rate_limited` (429s from the limiter), `rate_limited_requests` /
`rate_limited_tokens`, `in_flight`, `max_in_flight`, `elapsed` (seconds since start/reset) and
`series`: one entry per second since start/reset, ``{"t", "requests", "tokens", "429"}`` where
requests/tokens are what the limiter admitted in that second and 429 the limiter refusals.

With `workers` set, `serving` / `max_serving` count requests holding a worker and `queued` /
`max_queued` those waiting for one (`in_flight` counts both, and answers not yet written).

`models` {model: {...}}: per model named in a request that reached the limiter, `requests`
(admitted), `rate_limited` (= `rate_limited_requests` + `rate_limited_tokens`), `tokens_admitted`,
`prompt_tokens` / `completion_tokens` (the usage of its 200 answers) and its own `series`, with
the same rows and the same length as the global one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ModelStats", "Stats"]


class ModelStats:
    """The counters of one model."""

    __slots__ = (
        "completion_tokens",
        "prompt_tokens",
        "rate_limited_requests",
        "rate_limited_tokens",
        "requests",
        "series",
        "tokens_admitted",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.tokens_admitted = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.rate_limited_requests = 0
        self.rate_limited_tokens = 0
        self.series: dict[int, list[int]] = {}

    def snapshot(self, seconds: int) -> dict[str, Any]:
        """A JSON-ready copy; the series has `seconds` rows."""
        empty = (0, 0, 0)
        rows = self.series
        return {
            "requests": self.requests,
            "rate_limited": self.rate_limited_requests + self.rate_limited_tokens,
            "rate_limited_requests": self.rate_limited_requests,
            "rate_limited_tokens": self.rate_limited_tokens,
            "tokens_admitted": self.tokens_admitted,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "series": [
                {"t": t, "requests": row[0], "tokens": row[1], "429": row[2]}
                for t, row in ((t, rows.get(t, empty)) for t in range(seconds))
            ],
        }


class Stats:
    """Mutable counters owned by the server's event loop."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.in_flight = 0
        self.serving = 0
        self.queued = 0
        self.reset()

    def reset(self) -> None:
        """Zero every counter (in_flight, serving and queued stay: those requests are still open)."""
        self.start = self.clock()
        self.requests = 0
        self.responses: dict[int, int] = {}
        self.faults: dict[str, int] = {}
        self.tokens_admitted = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.rate_limited_requests = 0
        self.rate_limited_tokens = 0
        self.max_in_flight = self.in_flight
        self.max_serving = self.serving
        self.max_queued = self.queued
        self._series: dict[int, list[int]] = {}
        self.models: dict[str, ModelStats] = {}

    def _t(self) -> int:
        t = int(self.clock() - self.start)
        return t if t > 0 else 0

    def _model(self, model: str) -> ModelStats:
        stats = self.models.get(model)
        if stats is None:
            stats = self.models[model] = ModelStats()
        return stats

    @staticmethod
    def _row(series: dict[int, list[int]], t: int) -> list[int]:
        row = series.get(t)
        if row is None:
            row = series[t] = [0, 0, 0]
        return row

    def admitted(self, tokens: int, model: str = "") -> None:
        """The limiter admitted one request for `model` charged `tokens`."""
        t = self._t()
        self.tokens_admitted += tokens
        row = self._row(self._series, t)
        row[0] += 1
        row[1] += tokens
        per = self._model(model)
        per.requests += 1
        per.tokens_admitted += tokens
        row = self._row(per.series, t)
        row[0] += 1
        row[1] += tokens

    def limited(self, kind: str, model: str = "") -> None:
        """The limiter refused one request for `model` on `kind` ("requests" or "tokens")."""
        t = self._t()
        per = self._model(model)
        if kind == "requests":
            self.rate_limited_requests += 1
            per.rate_limited_requests += 1
        else:
            self.rate_limited_tokens += 1
            per.rate_limited_tokens += 1
        self._row(self._series, t)[2] += 1
        self._row(per.series, t)[2] += 1

    def billed(self, prompt: int, completion: int, model: str = "") -> None:
        """A 200 answer for `model` with this usage."""
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        per = self._model(model)
        per.prompt_tokens += prompt
        per.completion_tokens += completion

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of every counter; the series has one row per second, gaps filled."""
        series = []
        seconds = 0
        if self._series:
            seconds = max(self._series) + 1
            empty = (0, 0, 0)
            for t in range(seconds):
                row = self._series.get(t, empty)
                series.append({"t": t, "requests": row[0], "tokens": row[1], "429": row[2]})
        return {
            "requests": self.requests,
            "responses": {str(code): n for code, n in sorted(self.responses.items())},
            "faults": dict(sorted(self.faults.items())),
            "tokens_admitted": self.tokens_admitted,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "rate_limited": self.rate_limited_requests + self.rate_limited_tokens,
            "rate_limited_requests": self.rate_limited_requests,
            "rate_limited_tokens": self.rate_limited_tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "serving": self.serving,
            "max_serving": self.max_serving,
            "queued": self.queued,
            "max_queued": self.max_queued,
            "elapsed": round(self.clock() - self.start, 6),
            "series": series,
            "models": {name: self.models[name].snapshot(seconds) for name in sorted(self.models)},
        }
