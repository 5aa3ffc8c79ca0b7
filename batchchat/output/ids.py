"""A large set of custom_ids held as 128-bit hashes in sorted arrays, each with a 64-bit fingerprint.

A million ids take 24 MB here (against ~90 MB as a set of str), so that a resume of a million-line job stays
small. Two different ids share a 128-bit blake2b hash with a probability of about n*m / 2**128 (1e-27 for a
million done ids against a million input lines): a line is never skipped for another id's answer in practice.
The fingerprint 0 means "none recorded" (an output line written before fingerprints existed).
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable
from functools import partial
from hashlib import blake2b
from operator import methodcaller

_BUCKETS = 4096  # by the first 12 bits of the digest: a look-up searches ~250 entries of a million
_NONE = bytes(8)
_hash = partial(blake2b, digest_size=16)
_digest = methodcaller("digest")


def _encode(custom_id: str) -> bytes:
    return custom_id.encode("utf-8", "surrogatepass")


def id_key(custom_id: str) -> int:
    """The 128-bit hash of an id as a number (the order `IdIndex.keys` lists them in)."""
    return int.from_bytes(_hash(_encode(custom_id)).digest(), "big")


class IdIndexBuilder:
    """Collects ids in file order; `build()` keeps one entry per id, with the fingerprint of its last addition."""

    def __init__(self) -> None:
        # records of 28 bytes: digest (16), sequence (4), fingerprint (8), big-endian, so that the order of the
        # bytes is the order of the numbers and an id added again sorts after its earlier additions
        self._buckets: defaultdict[int, bytearray] = defaultdict(bytearray)
        self._seq = 0

    def add(self, custom_id: str, fingerprint: int = 0) -> None:
        """Add one id (an id added again replaces its fingerprint)."""
        self.add_encoded([_encode(custom_id)], [fingerprint.to_bytes(8, "big")])

    def add_encoded(self, ids: list[bytes], fingerprints: Iterable[bytes] | None = None) -> None:
        """Add ids given as UTF-8 bytes, with their fingerprints as 8 big-endian bytes (b"" or None: none)."""
        buckets = self._buckets
        seq = self._seq
        digests = map(_digest, map(_hash, ids))
        if fingerprints is None:
            for seq, digest in enumerate(digests, seq):  # noqa: B020 (the count goes on from the last one)
                buckets[(digest[0] << 4) | (digest[1] >> 4)] += digest + seq.to_bytes(4, "big") + _NONE
        else:
            for seq, (digest, fingerprint) in enumerate(zip(digests, fingerprints, strict=True), seq):  # noqa: B020
                buckets[(digest[0] << 4) | (digest[1] >> 4)] += digest + seq.to_bytes(4, "big") + (fingerprint or _NONE)
        self._seq = seq + 1 if ids else self._seq

    def build(self) -> IdIndex:
        """The sorted index; the builder is emptied bucket by bucket, so the two are never both held whole."""
        tables = []
        swap = sys.byteorder == "little"
        empty = (array("Q"), array("Q"), array("Q"))
        for b in range(_BUCKETS):
            bucket = self._buckets.pop(b, None)
            if not bucket:
                tables.append(empty)
                continue
            records = sorted(bucket[i:i + 28] for i in range(0, len(bucket), 28))
            del bucket
            kept = bytearray()
            for i, record in enumerate(records):  # equal digests sort by sequence: keep the last
                if i + 1 == len(records) or records[i + 1][:16] != record[:16]:
                    kept += record[:16] + record[20:]
            del records
            table = array("Q", bytes(kept))
            if swap:
                table.byteswap()
            tables.append((table[0::3], table[1::3], table[2::3]))
        return IdIndex(tables)


class IdIndex:
    """A sorted, read-only set of id hashes, with a fingerprint per entry and a position (0 <= it < len) each."""

    __slots__ = ("_offsets", "_tables")

    def __init__(self, tables: list[tuple[array, array, array]] | None = None) -> None:
        empty = array("Q")
        self._tables = tables if tables is not None else [(empty, empty, empty)] * _BUCKETS
        self._offsets = [0]
        for his, _, _ in self._tables:
            self._offsets.append(self._offsets[-1] + len(his))

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
        digest = _hash(custom_id).digest()
        bucket = (digest[0] << 4) | (digest[1] >> 4)
        his, los, fps = self._tables[bucket]
        hi = int.from_bytes(digest[:8], "big")
        i = bisect_left(his, hi)
        n = len(his)
        if i < n and his[i] == hi:
            lo = int.from_bytes(digest[8:], "big")
            while i < n and his[i] == hi:
                if los[i] == lo:
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

    def fingerprint(self, position: int) -> int:
        """The fingerprint recorded for the entry at `position` (0: none)."""
        bucket = bisect_right(self._offsets, position) - 1
        return self._tables[bucket][2][position - self._offsets[bucket]]

    def without(self, other: IdIndex) -> IdIndex:
        """This index less the ids `other` holds."""
        if not len(other) or not len(self):
            return self
        tables = []
        for (his, los, fps), (other_his, other_los, _) in zip(self._tables, other._tables, strict=True):
            keep = [i for i, (hi, lo) in enumerate(zip(his, los, strict=True))
                    if not _holds(other_his, other_los, hi, lo)]
            tables.append((array("Q", (his[i] for i in keep)), array("Q", (los[i] for i in keep)),
                           array("Q", (fps[i] for i in keep))))
        return IdIndex(tables)

    def keys(self) -> list[int]:
        """Every id's 128-bit hash, in order (tests)."""
        return [(hi << 64) | lo for his, los, _ in self._tables for hi, lo in zip(his, los, strict=True)]

    def nbytes(self) -> int:
        """Memory held by the entries."""
        return 24 * len(self)


def _holds(his: array, los: array, hi: int, lo: int) -> bool:
    i = bisect_left(his, hi)
    while i < len(his) and his[i] == hi:
        if los[i] == lo:
            return True
        i += 1
    return False
