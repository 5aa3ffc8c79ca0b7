"""A large set of custom_ids held as 128-bit hashes in sorted arrays, each with a 64-bit fingerprint and a 64-bit
line hash.

A million ids take 32 MB here (against ~90 MB as a set of str), so that a resume of a million-line job stays
small. An id's 128 bits are two 64-bit SipHash values (Python's own `hash`, keyed at random per process: the
index lives in one process) of two different messages, the id's UTF-8 bytes and the same behind a zero byte;
two different ids share both with a probability of about n*m / 2**128 (1e-27 for a million done ids against a
million input lines), so a line is never skipped for another id's answer in practice. SipHash runs in C, at
~10 times blake2b's speed here, which keeps a resume of a million lines within seconds.
The fingerprint and the line hash 0 mean "none recorded" (a line written before they existed).

The entries are split by the top bits of the first hash into `_BUCKETS` sorted tables. They are added a block
at a time, sorted by C code (a block's entries are sorted, then cut into the buckets' runs; a bucket's runs are
merged by one more sort when the index is built), so that no Python loop runs per entry while an output is read.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import pairwise

_BUCKETS = 16  # while building: by the top 4 bits of the first hash
_SHIFT = 60
_BOUNDS = [(b << _SHIFT) - (1 << 63) for b in range(1, _BUCKETS)]  # where each bucket after the first starts
_TABLES = 4096  # once built: by the top 12 bits (a look-up bisects ~250 entries of a million: a bisect over an
_TABLE_SHIFT = 52  # array makes an int per step, so short tables make it fast)
_PER_BUCKET = _TABLES // _BUCKETS
_SALT = b"\x00"

Table = tuple[array, array, array, array]  # first hashes (sorted), second hashes, fingerprints, line hashes


def _encode(custom_id: str) -> bytes:
    return custom_id.encode("utf-8", "surrogatepass")


def _table(k1: int) -> int:
    return (k1 >> _TABLE_SHIFT) + (_TABLES >> 1)


def _empty() -> Table:
    return array("q"), array("q"), array("Q"), array("Q")


def id_key(custom_id: str) -> tuple[int, int]:
    """The 128-bit hash of an id, as the pair `IdIndex.keys` lists."""
    data = _encode(custom_id)
    return hash(data), hash(_SALT + data)


class IdIndexBuilder:
    """Collects ids in file order; `build()` keeps one entry per id, with the fingerprints of its last addition."""

    def __init__(self) -> None:
        self._runs: list[Table] = [_empty() for _ in range(_BUCKETS)]  # per bucket: runs sorted by first hash
        self._one: tuple[list[bytes], list[int], list[int]] = ([], [], [])  # ids added one at a time, not yet sorted

    def add(self, custom_id: str, fingerprint: int = 0, line_hash: int = 0) -> None:
        """Add one id (an id added again replaces its fingerprint and line hash)."""
        ids, fps, lhs = self._one
        ids.append(_encode(custom_id))
        fps.append(fingerprint)
        lhs.append(line_hash)
        if len(ids) >= 4096:
            self._flush_one()

    def _flush_one(self) -> None:
        ids, fps, lhs = self._one
        if ids:
            self._one = ([], [], [])
            self._add(ids, fps, lhs)

    def add_encoded(self, ids: list[bytes], fingerprints: Sequence[int] | None = None,
                    line_hashes: Sequence[int] | None = None) -> None:
        """Add ids given as UTF-8 bytes, with their fingerprints and line hashes (None, or 0 for one: none)."""
        self._flush_one()  # those added before come first
        self._add(ids, fingerprints, line_hashes)

    def _add(self, ids: list[bytes], fingerprints: Sequence[int] | None, line_hashes: Sequence[int] | None) -> None:
        n = len(ids)
        if not n:
            return
        zeros = [0] * n
        fps = zeros if fingerprints is None else fingerprints
        lhs = zeros if line_hashes is None else line_hashes
        if len(fps) != n or len(lhs) != n:
            raise ValueError("one fingerprint and one line hash per id")
        firsts = list(map(hash, ids))
        seconds = list(map(hash, map(_SALT.__add__, ids)))
        order = sorted(range(n), key=firsts.__getitem__)  # stable: equal ids stay in file order
        k1s = array("q", map(firsts.__getitem__, order))
        k2s = array("q", map(seconds.__getitem__, order))
        fp_col = array("Q", map(fps.__getitem__, order))
        lh_col = array("Q", map(lhs.__getitem__, order))
        start = 0
        for bucket, end in enumerate([*(bisect_left(k1s, bound) for bound in _BOUNDS), n]):
            if end > start:
                run = self._runs[bucket]
                run[0].extend(k1s[start:end])
                run[1].extend(k2s[start:end])
                run[2].extend(fp_col[start:end])
                run[3].extend(lh_col[start:end])
            start = end

    def build(self) -> IdIndex:
        """The sorted index; the builder is emptied bucket by bucket, so the two are never both held whole."""
        self._flush_one()
        tables = []
        for bucket in range(_BUCKETS):
            k1s, k2s, fps, lhs = self._runs[bucket]
            self._runs[bucket] = _empty()
            order = sorted(range(len(k1s)), key=k1s.__getitem__)  # merges the runs; equal ids keep file order
            table = (array("q", map(k1s.__getitem__, order)), array("q", map(k2s.__getitem__, order)),
                     array("Q", map(fps.__getitem__, order)), array("Q", map(lhs.__getitem__, order)))
            del k1s, k2s, fps, lhs, order
            if len(set(table[0])) < len(table[0]):  # a first hash twice: an id added again (or, rarely, a clash)
                table = _last_of_each(table)
            tables.extend(_split(table, bucket))
        return IdIndex(tables)


def _split(table: Table, bucket: int) -> list[Table]:
    """A bucket's sorted table cut into its `_PER_BUCKET` tables, by the next bits of the first hash."""
    k1s = table[0]
    first = bucket * _PER_BUCKET - (_TABLES >> 1)  # the top 12 bits of the bucket's first table, as signed
    cuts = [0, *(bisect_left(k1s, (first + t) << _TABLE_SHIFT) for t in range(1, _PER_BUCKET)), len(k1s)]
    return [tuple(column[start:end] for column in table) for start, end in pairwise(cuts)]  # type: ignore[misc]


def _last_of_each(table: Table) -> Table:
    """A bucket's table with one entry per id: its last addition (entries with the same first hash are next to
    each other, in file order)."""
    k1s, k2s, fps, lhs = table
    keep: list[int] = []
    i, n = 0, len(k1s)
    while i < n:
        j = i + 1
        while j < n and k1s[j] == k1s[i]:
            j += 1
        last: dict[int, int] = {}
        for at in range(i, j):
            last.pop(k2s[at], None)
            last[k2s[at]] = at  # insertion order: by the last addition of each id
        keep.extend(sorted(last.values()))
        i = j
    return (array("q", map(k1s.__getitem__, keep)), array("q", map(k2s.__getitem__, keep)),
            array("Q", map(fps.__getitem__, keep)), array("Q", map(lhs.__getitem__, keep)))


class IdIndex:
    """A sorted, read-only set of id hashes, with a fingerprint and a line hash per entry and a position
    (0 <= it < len) each."""

    __slots__ = ("_offsets", "_tables", "fingerprinted")

    def __init__(self, tables: list[Table] | None = None) -> None:
        self._tables = tables if tables is not None else [_empty() for _ in range(_TABLES)]
        self._offsets = [0]
        for k1s, _, _, _ in self._tables:
            self._offsets.append(self._offsets[-1] + len(k1s))
        self.fingerprinted = any(any(fps) for _, _, fps, _ in self._tables)  # any entry with a fingerprint

    @classmethod
    def of(cls, ids: Iterable[str], fingerprints: dict[str, int] | None = None,
           line_hashes: dict[str, int] | None = None) -> IdIndex:
        """An index of `ids` (tests, small sets)."""
        ids = list(ids)
        builder = IdIndexBuilder()
        builder.add_encoded(list(map(_encode, ids)), [(fingerprints or {}).get(i, 0) for i in ids],
                            [(line_hashes or {}).get(i, 0) for i in ids])
        return builder.build()

    def __len__(self) -> int:
        return self._offsets[-1]

    def lookup_encoded(self, custom_id: bytes) -> tuple[int, int, int] | None:
        """The position, fingerprint and line hash of an id given as UTF-8 bytes, or None if the index lacks it."""
        k1 = hash(custom_id)
        bucket = _table(k1)
        k1s, k2s, fps, lhs = self._tables[bucket]
        i = bisect_left(k1s, k1)
        n = len(k1s)
        if i < n and k1s[i] == k1:
            k2 = hash(_SALT + custom_id)
            while i < n and k1s[i] == k1:
                if k2s[i] == k2:
                    return self._offsets[bucket] + i, fps[i], lhs[i]
                i += 1
        return None

    def lookup(self, custom_id: str) -> tuple[int, int, int] | None:
        """The position, fingerprint and line hash of `custom_id`, or None."""
        return self.lookup_encoded(_encode(custom_id))

    def position(self, custom_id: str) -> int:
        """The position of `custom_id`, or -1."""
        found = self.lookup(custom_id)
        return -1 if found is None else found[0]

    def __contains__(self, custom_id: object) -> bool:
        return isinstance(custom_id, str) and self.lookup(custom_id) is not None

    def positions_unchanged(self, ids: Iterable[bytes], line_hashes: Sequence[int]) -> list[int] | None:
        """The positions of `ids` (UTF-8 bytes) if the index holds every one as unchanged: recorded with the
        line hash given for it, or with no fingerprint at all; else None (a fast path for a block of lines: None
        may also mean "look at each one")."""
        positions = []
        tables, offsets = self._tables, self._offsets
        ids = list(ids)
        for k1, k2, line_hash in zip(map(hash, ids), map(hash, map(_SALT.__add__, ids)), line_hashes, strict=True):
            bucket = (k1 >> _TABLE_SHIFT) + (_TABLES >> 1)
            k1s, k2s, fps, lhs = tables[bucket]
            i = bisect_left(k1s, k1)
            if i == len(k1s) or k1s[i] != k1 or k2s[i] != k2 or (fps[i] and lhs[i] != line_hash):
                return None
            positions.append(offsets[bucket] + i)
        return positions

    def fingerprint(self, position: int) -> int:
        """The fingerprint recorded for the entry at `position` (0: none)."""
        bucket = bisect_right(self._offsets, position) - 1
        return self._tables[bucket][2][position - self._offsets[bucket]]

    def line_hash(self, position: int) -> int:
        """The line hash recorded for the entry at `position` (0: none)."""
        bucket = bisect_right(self._offsets, position) - 1
        return self._tables[bucket][3][position - self._offsets[bucket]]

    def without(self, other: IdIndex) -> IdIndex:
        """This index less the ids `other` holds."""
        if not len(other) or not len(self):
            return self
        tables = []
        for (k1s, k2s, fps, lhs), (other_k1s, other_k2s, _, _) in zip(self._tables, other._tables, strict=True):
            keep = [i for i, (k1, k2) in enumerate(zip(k1s, k2s, strict=True))
                    if not _holds(other_k1s, other_k2s, k1, k2)]
            tables.append((array("q", map(k1s.__getitem__, keep)), array("q", map(k2s.__getitem__, keep)),
                           array("Q", map(fps.__getitem__, keep)), array("Q", map(lhs.__getitem__, keep))))
        return IdIndex(tables)

    def keys(self) -> list[tuple[int, int]]:
        """Every id's 128-bit hash, sorted (tests)."""
        return sorted((k1, k2) for k1s, k2s, _, _ in self._tables for k1, k2 in zip(k1s, k2s, strict=True))

    def nbytes(self) -> int:
        """Memory held by the entries."""
        return 32 * len(self)


def _holds(k1s: array, k2s: array, k1: int, k2: int) -> bool:
    i = bisect_left(k1s, k1)
    while i < len(k1s) and k1s[i] == k1:
        if k2s[i] == k2:
            return True
        i += 1
    return False
