"""`RequestCache`: answers kept in an SQLite file, keyed by the request, for every run (and process) that uses it.

The key is a 128-bit BLAKE2b of the request as sent: its absolute URL (base URL, path and query) and its body
after defaults, with sorted keys; never the API key or a header. Its first 64 bits are the rowid of a small
`keys` table (about 30 bytes a row: a million keys fit SQLite's page cache, so a miss never reads the disk), the
other 64 are checked, so two requests whose rowids collide never share an answer (the second is not stored); the
answers themselves sit in a table of their own, read only on a hit. The file is in WAL mode: readers never wait
for a writer, and processes on one host share it safely (writes wait up to `BUSY_TIMEOUT_MS` for each other).
SQLite's page cache is bounded (`CACHE_KIB`), so memory does not grow with the file. WAL is not for network file
systems: one host only.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchchat.errors import UsageError

BUSY_TIMEOUT_MS = 30_000
CACHE_KIB = 32_768  # SQLite's page cache of the reading connection: holds the keys of ~1M answers
WRITER_CACHE_KIB = 8_192
READ_SECONDS = 0.5  # the longest a run's look-ups share one read snapshot
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS keys (
        id INTEGER PRIMARY KEY,       -- the key's first 64 bits
        check_bits INTEGER NOT NULL,  -- its last 64 bits
        answer INTEGER NOT NULL       -- the rowid of its row in answers
    )""",
    """CREATE TABLE IF NOT EXISTS answers (
        stored_at INTEGER NOT NULL,   -- unix seconds
        endpoint TEXT NOT NULL,       -- the URL's path, for stats
        model TEXT,
        status INTEGER NOT NULL,
        request_id TEXT,
        usage BLOB,                   -- JSON
        body BLOB NOT NULL            -- the answer's body as the server sent it
    )""",
)


@dataclass(slots=True)
class CachedAnswer:
    """An answer held by the cache: the body as received, its status, request id, usage, and when it was stored."""

    body: bytes
    status: int = 200
    request_id: str | None = None
    usage: dict[str, Any] | None = None
    stored_at: float = 0.0


@dataclass(slots=True)
class CacheStats:
    """What `batchchat cache stats` shows."""

    path: str
    entries: int
    file_bytes: int
    oldest: float | None
    newest: float | None
    by_model: dict[str, int]

    def render(self) -> str:
        """A few lines for a person."""
        def when(t: float | None) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"

        size = f"{self.file_bytes / 1e6:,.1f} MB" if self.file_bytes >= 1e6 else f"{self.file_bytes / 1e3:,.0f} kB"
        lines = [f"{self.path}: {self.entries:,} answers, {size}",
                 f"  stored     {when(self.oldest)} .. {when(self.newest)}"]
        lines += [f"  {model:<24} {count:>12,}" for model, count in self.by_model.items()]
        return "\n".join(lines)


_LOOKUP = ("SELECT k.check_bits, a.status, a.request_id, a.usage, a.body, a.stored_at "
           "FROM keys AS k JOIN answers AS a ON a.rowid = k.answer WHERE k.id = ?")


def request_key(url: str, body: dict[str, Any]) -> bytes:
    """The cache key of a request: 16 bytes of BLAKE2b over its absolute URL and its body with sorted keys."""
    return key_of(url.encode(), orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


def key_of(url: bytes, canonical_body: bytes) -> bytes:
    """`request_key` from the URL's bytes and the body already encoded with sorted keys."""
    return hashlib.blake2b(url + b"\n" + canonical_body, digest_size=16).digest()


_split = struct.Struct("<qq").unpack  # a key's two 64-bit halves (signed, as SQLite's integers are)


class RequestCache:
    """An SQLite file of answers keyed by request (see the module's docstring); `lookup` and `store` by URL and body.

    One connection reads and one writes, each used by one thread at a time (a run opens the cache in a worker
    thread, looks up on the event loop and stores from the write stage's worker thread).
    """

    def __init__(self, path: str | Path, *, create: bool = True, read_batch: int = 1) -> None:
        self.path = Path(path)
        self.read_batch = read_batch  # > 1: look-ups share a read transaction (see `_snapshot`)
        self._reading = False
        self._reads = 0
        self._read_since = 0.0
        if not create and not self.path.exists():
            raise UsageError(f"cache {self.path} does not exist")
        if self.path.is_dir():
            raise UsageError(f"cache {self.path} is a directory, not an SQLite file")
        try:
            self._writer = self._connect(WRITER_CACHE_KIB)
            self._setup(self._writer)
            self._reader = self._connect(CACHE_KIB)
            self._lookups = self._reader.cursor()
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"cache {self.path} cannot be used: {exc}") from None

    def _connect(self, cache_kib: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                               isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA cache_size = -{cache_kib}")
        return conn

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:  # another process may be creating the same file this moment
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before the table: prune can shrink the file
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # WAL: a power cut may lose the last stores, never the file
                for statement in _SCHEMA:
                    conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    key = staticmethod(request_key)

    def _snapshot(self) -> None:
        """Look-ups share one read transaction, renewed every `read_batch` look-ups or `READ_SECONDS`: each
        look-up in a transaction of its own costs three system calls (WAL read locks), half its time. An answer
        another process stores meanwhile is seen at the next renewal."""
        if self._reading:
            self._reads += 1
            if self._reads < self.read_batch and time.monotonic() - self._read_since < READ_SECONDS:
                return
            self._reader.execute("COMMIT")
        self._reader.execute("BEGIN")
        self._reading, self._reads, self._read_since = True, 0, time.monotonic()

    def end_snapshot(self) -> None:
        """End the shared read transaction, if one is open (the next look-up sees everything stored)."""
        if self._reading:
            self._reader.execute("COMMIT")
            self._reading = False

    def lookup(self, url: str, body: dict[str, Any]) -> CachedAnswer | None:
        """The answer stored for this request, or None."""
        return self.lookup_key(request_key(url, body))

    def lookup_key(self, key: bytes) -> CachedAnswer | None:
        """The answer stored under `key` (from `request_key`), or None."""
        rowid, check = _split(key)
        if self.read_batch > 1:
            self._snapshot()
        row = self._lookups.execute(_LOOKUP, (rowid,)).fetchone()
        if row is None or row[0] != check:
            return None
        usage = orjson.loads(row[3]) if row[3] else None
        return CachedAnswer(row[4], row[1], row[2], usage, row[5])

    def store(self, url: str, body: dict[str, Any], answer: CachedAnswer) -> None:
        """Keep `answer` for this request (an answer already stored for it stays)."""
        path = url.split("?", 1)[0]
        self.store_many([(request_key(url, body), path, body.get("model"), answer)])

    def store_many(self, entries: Iterable[tuple[bytes, str, Any, CachedAnswer]]) -> int:
        """Keep answers given as (key, endpoint, model, answer), in one transaction; how many were new."""
        now = int(time.time())
        entries = list(entries)
        if not entries:
            return 0
        conn = self._writer
        stored = 0
        with _transaction(conn):
            for key, endpoint, model, answer in entries:
                rowid, check = _split(key)
                if conn.execute("SELECT 1 FROM keys WHERE id = ?", (rowid,)).fetchone() is not None:
                    continue  # held already (or a different request sharing the rowid: never stored)
                cursor = conn.execute(
                    "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (now, endpoint, model if isinstance(model, str) else None, answer.status, answer.request_id,
                     orjson.dumps(answer.usage) if answer.usage is not None else None, answer.body))
                conn.execute("INSERT INTO keys VALUES (?, ?, ?)", (rowid, check, cursor.lastrowid))
                stored += 1
        return stored

    def stats(self) -> CacheStats:
        """How many answers, how large the file, the oldest and newest, per model."""
        entries, oldest, newest = self._reader.execute(
            "SELECT count(*), min(stored_at), max(stored_at) FROM answers").fetchone()
        by_model = dict(self._reader.execute(
            "SELECT coalesce(model, '-'), count(*) FROM answers GROUP BY 1 ORDER BY 2 DESC").fetchall())
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return CacheStats(str(self.path), entries, size, oldest, newest, by_model)

    def prune(self, older_than: float) -> int:
        """Remove the answers stored more than `older_than` seconds ago and give their space back; how many."""
        cutoff = int(time.time() - older_than)
        with _transaction(self._writer):
            self._writer.execute("DELETE FROM keys WHERE answer IN (SELECT rowid FROM answers WHERE stored_at < ?)",
                                 (cutoff,))
            removed = self._writer.execute("DELETE FROM answers WHERE stored_at < ?", (cutoff,)).rowcount
        self._writer.execute("PRAGMA incremental_vacuum")
        self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def close(self) -> None:
        """Close both connections."""
        self.end_snapshot()
        self._reader.close()
        self._writer.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self._conn.execute("ROLLBACK" if kind is not None else "COMMIT")
