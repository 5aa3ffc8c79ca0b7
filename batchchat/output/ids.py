"""A large set of custom_ids held as 128-bit hashes in sorted arrays, each with a 64-bit fingerprint.

A million ids take 24 MB here (against ~90 MB as a set of str), so that a resume of a million-line job stays
small. An id's 128 bits are two 64-bit SipHash values (Python's own `hash`, keyed at random per process: the
index lives in one process) of two different messages, the id's UTF-8 bytes and the same behind a zero byte;
two different ids share both with a probability of about n*m / 2**128 (1e-27 for a million done ids against a
million input lines), so a line is never skipped for another id's answer in practice. SipHash runs in C, at
~10 times blake2b's speed here, which keeps a resume of a million lines within seconds.
The fingerprint 0 means "none recorded" (an output line written before fingerprints existed).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable

_BUCKETS = 4096  # by the low 12 bits of the first hash: a look-up searches ~250 entries of a million
_MASK = _BUCKETS - 1
_SALT = b"\x00"


def _encode(custom_id: str) -> bytes:
    return custom_id.encode("utf-8", "surrogatepass")


def id_key(custom_id: str) -> tuple[int, int]:
    """The 128-bit hash of an id, as the pair `IdIndex.keys` lists."""
    data = _encode(custom_id)
    return hash(data), hash(_SALT + data)


class IdIndexBuilder:
    """Collects ids in file order; `build()` keeps one entry per id, with the fingerprint of its last addition."""

    def __init__(self) -> None:
        self._k1: dict[int, array] = {}  # per bucket, in file order: first hash, second hash, fingerprint
        self._k2: dict[int, array] = {}
        self._fp: dict[int, array] = {}

    def add(self, custom_id: str, fingerprint: int = 0) -> None:
        """Add one id (an id added again replaces its fingerprint)."""
        self.add_encoded([_encode(custom_id)], [fingerprint])

    def add_encoded(self, ids: list[bytes], fingerprints: Iterable[int] | None = None) -> None:
        """Add ids given as UTF-8 bytes, with their fingerprints (None, or 0 for one: none)."""
        k1s, k2s, fps = self._k1, self._k2, self._fp
        firsts = map(hash, ids)
        seconds = map(hash, map(_SALT.__add__, ids))
        for k1, k2, fp in zip(firsts, seconds, fingerprints if fingerprints is not None else _zeros(len(ids)),
                              strict=True):
            bucket = k1 & _MASK
            column = k1s.get(bucket)
            if column is None:
                column = k1s[bucket] = array("q")
                k2s[bucket], fps[bucket] = array("q"), array("Q")
            column.append(k1)
            k2s[bucket].append(k2)
            fps[bucket].append(fp)

    def build(self) -> IdIndex:
        """The sorted index; the builder is emptied bucket by bucket, so the two are never both held whole."""
        tables = []
        empty = (array("q"), array("q"), array("Q"))
        for bucket in range(_BUCKETS):
            k1s = self._k1.pop(bucket, None)
            if k1s is None:
                tables.append(empty)
                continue
            k2s, fps = self._k2.pop(bucket), self._fp.pop(bucket)
            entries = sorted(zip(k1s, k2s, range(len(k1s)), fps, strict=True))  # equal ids: file order
            del k1s, k2s, fps
            kept = [entry for entry, after in zip(entries, [*entries[1:], None], strict=True)
                    if after is None or after[:2] != entry[:2]]  # an id added again: its last addition
            del entries
            first, second, _, fingerprint = zip(*kept, strict=True)
            tables.append((array("q", first), array("q", second), array("Q", fingerprint)))
        return IdIndex(tables)


def _zeros(n: int) -> Iterable[int]:
    return (0 for _ in range(n))


class IdIndex:
    """A sorted, read-only set of id hashes, with a fingerprint per entry and a position (0 <= it < len) each."""

    __slots__ = ("_offsets", "_tables")

    def __init__(self, tables: list[tuple[array, array, array]] | None = None) -> None:
        empty = (array("q"), array("q"), array("Q"))
        self._tables = tables if tables is not None else [empty] * _BUCKETS
        self._offsets = [0]
        for k1s, _, _ in self._tables:
            self._offsets.append(self._offsets[-1] + len(k1s))

    @classmethod
    def of(cls, ids: Iterable[str], fingerprints: dict[str, int] | None = None) -> IdIndex:
        """An index of `ids` (tests, small sets)."""
        builder = IdIndexBuilder()
        for custom_id in ids:
            builder.add(custom_id, (fingerprints or {}).get(custom_id, 0))
        return builder.build()

    def __len__(self) -> int:
        return self._offsets[-1]

    def lookup_encoded(self, custom_id: bytes) -> tuple[int, int] | None:
        """The position and fingerprint of an id given as UTF-8 bytes, or None if the index lacks it."""
        k1 = hash(custom_id)
        bucket = k1 & _MASK
        k1s, k2s, fps = self._tables[bucket]
        i = bisect_left(k1s, k1)
        n = len(k1s)
        if i < n and k1s[i] == k1:
            k2 = hash(_SALT + custom_id)
            while i < n and k1s[i] == k1:
                if k2s[i] == k2:
                    return self._offsets[bucket] + i, fps[i]
                i += 1
        return None

    def lookup(self, custom_id: str) -> tuple[int, int] | None:
        """The position and fingerprint of `custom_id`, or None."""
        return self.lookup_encoded(_encode(custom_id))

    def position(self, custom_id: str) -> int:
        """The position of `custom_id`, or -1."""
        found = self.lookup(custom_id)
        return -1 if found is None else found[0]

    def __contains__(self, custom_id: object) -> bool:
        return isinstance(custom_id, str) and self.lookup(custom_id) is not None

    def positions_unmarked(self, ids: Iterable[bytes]) -> list[int] | None:
        """The positions of `ids` (UTF-8 bytes) if the index holds every one without a fingerprint, else None
        (a fast path for a block of lines: None may also mean "look at each one")."""
        positions = []
        tables, offsets = self._tables, self._offsets
        ids = list(ids)
        for k1, k2 in zip(map(hash, ids), map(hash, map(_SALT.__add__, ids)), strict=True):
            bucket = k1 & _MASK
            k1s, k2s, fps = tables[bucket]
            i = bisect_left(k1s, k1)
            if i == len(k1s) or k1s[i] != k1 or k2s[i] != k2 or fps[i]:
                return None
            positions.append(offsets[bucket] + i)
        return positions

    def fingerprint(self, position: int) -> int:
        """The fingerprint recorded for the entry at `position` (0: none)."""
        bucket = bisect_right(self._offsets, position) - 1
        return self._tables[bucket][2][position - self._offsets[bucket]]

    def without(self, other: IdIndex) -> IdIndex:
        """This index less the ids `other` holds."""
        if not len(other) or not len(self):
            return self
        tables = []
        for (k1s, k2s, fps), (other_k1s, other_k2s, _) in zip(self._tables, other._tables, strict=True):
            keep = [i for i, (k1, k2) in enumerate(zip(k1s, k2s, strict=True))
                    if not _holds(other_k1s, other_k2s, k1, k2)]
            tables.append((array("q", (k1s[i] for i in keep)), array("q", (k2s[i] for i in keep)),
                           array("Q", (fps[i] for i in keep))))
        return IdIndex(tables)

    def keys(self) -> list[tuple[int, int]]:
        """Every id's 128-bit hash, sorted (tests)."""
        return sorted((k1, k2) for k1s, k2s, _ in self._tables for k1, k2 in zip(k1s, k2s, strict=True))

    def nbytes(self) -> int:
        """Memory held by the entries."""
        return 24 * len(self)


def _holds(k1s: array, k2s: array, k1: int, k2: int) -> bool:
    i = bisect_left(k1s, k1)
    while i < len(k1s) and k1s[i] == k1:
        if k2s[i] == k2:
            return True
        i += 1
    return False
