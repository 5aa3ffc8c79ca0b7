"""`RunCache`: the request cache inside one online run (`--cache`).

The dispatcher asks `serve(job)` for every planned line before it is charged or admitted: a request the cache
holds becomes its result line at once (`cached: true`, cost 0, never sent, nothing reserved from the rate budget
or the spending cap); a request it does not hold has its key noted. The write stage calls `stored(results)` in its
worker thread right after a batch of lines is written: each new success among them is stored, so an answer is on
disk in the output before it is in the cache. A cache that fails mid-run (disk full, a corrupt file) warns once
and is left alone; the run goes on.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from batchchat.cache.store import CachedAnswer, RequestCache, key_of
from batchchat.config.settings import EndpointConfig
from batchchat.input.parse import Job
from batchchat.output.lines import Result


class RunCache:
    """A run's use of a `RequestCache`: answers served from it, new successes stored in it, and the counts."""

    def __init__(self, path: Path, endpoint: EndpointConfig, warn: Callable[[str], None]) -> None:
        self.cache = RequestCache(path, read_batch=256)
        self._url_for = endpoint.url_for
        self._urls: dict[str, bytes] = {}
        self._warn = warn
        # custom_id -> (key, endpoint, model) of a request sent: at most those in flight
        self._pending: dict[str, tuple[bytes, str, object]] = {}
        self._broken = False
        self.hits = 0
        self.stored_count = 0

    def serve(self, job: Job) -> Result | None:
        """The result line of `job` from the cache, or None (then its key is kept until its result is written)."""
        url = self._urls.get(job.url)
        if url is None:
            url = self._urls[job.url] = self._url_for(job.url).encode()
        canonical = orjson.dumps(job.body, option=orjson.OPT_SORT_KEYS)  # encoded once for key and fingerprint
        key = key_of(url, canonical)
        answer = None
        if not self._broken:
            try:
                answer = self.cache.lookup_key(key)
            except sqlite3.Error as exc:
                self._fail(exc)
        if answer is None:
            self._pending[job.custom_id] = (key, job.url, job.body.get("model"))
            return None
        self.hits += 1
        return Result(job.custom_id, job.line_no, answer.status, answer.body, answer.request_id, usage=answer.usage,
                      metadata=job.metadata, fingerprint=_fingerprint(job.url, canonical), cost_usd=0.0,
                      cached=True)

    def stored(self, results: Iterable[Result]) -> None:
        """Store the new successes among `results` (already written to the output); forget the others' keys."""
        pending = self._pending
        entries = []
        for result in results:
            sent = pending.pop(result.custom_id, None)
            if sent is not None and result.ok and result.raw_body is not None:
                answer = CachedAnswer(result.raw_body, result.status or 200, result.request_id, result.usage)
                entries.append((*sent, answer))
        if not entries or self._broken:
            return
        try:
            self.stored_count += self.cache.store_many(entries)
        except sqlite3.Error as exc:
            self._fail(exc)

    def _fail(self, exc: sqlite3.Error) -> None:
        if not self._broken:
            self._broken = True
            self._warn(f"batchchat: warning: the cache {self.cache.path} failed ({exc}); the run goes on without it")

    def close(self) -> None:
        """Close the cache file."""
        self.cache.close()


def _fingerprint(path: str, canonical: bytes) -> str:
    """`output.lines.request_fingerprint` from the body already encoded with sorted keys."""
    return hashlib.blake2b(path.encode() + b"\n" + canonical, digest_size=8).hexdigest()
