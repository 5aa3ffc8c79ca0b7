"""A first pass over an output: which line of each id counts, and which columns its lines ask for.

An output holds one line per id once a run has finished, but a partial or hand-merged one may hold several: the
line that counts is a success over an error, else the last (as `batchchat merge` chooses). Ids are held as
64-bit hashes in an array (8 bytes a line); only ids whose hash repeats are read again, by name, so a million
lines cost a few MB whatever they hold. A torn last line (a crash mid-write) is not a line.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson

from batchchat.errors import UsageError
from batchchat.results.flat import kind_of, outcome


@dataclass(slots=True)
class OutputScan:
    """What the first pass found: lines, the lines that lose to another of their id, and the dynamic columns."""

    lines: int = 0
    losers: set[int] = field(default_factory=set)  # line indexes superseded by another line of the same id
    repeated_ids: dict[str, int] = field(default_factory=dict)  # id -> its number of lines, for ids with several
    answered_twice: int = 0  # ids with more than one successful line (a custom_id collision, or a bad merge)
    metadata: dict[str, set[str]] = field(default_factory=dict)  # key -> kinds of its values
    parsed: dict[str, set[str]] = field(default_factory=dict)
    embedding: str | None = None  # None, "vector" (one per line) or "vectors" (a list of them)


def iter_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, parsed line) of every whole line; a line that is not a JSON object raises `UsageError`."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read output {path}: {exc.strerror}") from None
    with handle:
        for index, raw in enumerate(handle):
            if not raw.endswith(b"\n"):
                return  # a torn last line
            if not raw.strip():
                continue
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise UsageError(f"{path}:{index + 1}: not a result line ({exc})") from None
            if not isinstance(line, dict):
                raise UsageError(f"{path}:{index + 1}: not a result line (not a JSON object)")
            yield index, line


def scan_output(path: Path, columns: bool = True) -> OutputScan:
    """The first pass (see the module's docstring); `columns` False skips the column kinds (reports)."""
    found = OutputScan()
    hashes = array("q")
    for _index, line in iter_lines(path):
        found.lines += 1
        hashes.append(hash(str(line.get("custom_id"))))
        if columns:
            _note_columns(found, line)
    repeated = _repeated(hashes)
    if repeated:
        _choose_lines(path, repeated, found)
    return found


def _note_columns(found: OutputScan, line: dict[str, Any]) -> None:
    for target, name in ((found.metadata, "metadata"), (found.parsed, "parsed")):
        values = line.get(name)
        if values is None:
            continue
        for key, value in (values.items() if isinstance(values, dict) else ((name, values),)):
            kinds = target.setdefault(str(key), set())
            kind = kind_of(value)
            if kind is not None:
                kinds.add(kind)
    response = line.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list) and data:  # embeddings: one vector a line, or a list of them
        nested = len(data) > 1
        if nested or found.embedding is None:
            found.embedding = "vectors" if nested else "vector"


def _repeated(hashes: array) -> set[int]:
    ordered = sorted(hashes)
    return {a for a, b in pairwise(ordered) if a == b}


def _choose_lines(path: Path, repeated: set[int], found: OutputScan) -> None:
    """Among the lines of each id that has several: a success wins over an error, else the last one."""
    best: dict[str, tuple[bool, int]] = {}
    counts: dict[str, int] = {}
    successes: dict[str, int] = {}
    for index, line in iter_lines(path):
        custom_id = str(line.get("custom_id"))
        if hash(custom_id) not in repeated:
            continue
        counts[custom_id] = counts.get(custom_id, 0) + 1
        ok = outcome(line)[0]
        successes[custom_id] = successes.get(custom_id, 0) + ok
        kept = best.get(custom_id)
        if kept is None or ok or not kept[0]:
            if kept is not None:
                found.losers.add(kept[1])
            best[custom_id] = (ok, index)
        else:
            found.losers.add(index)
    found.repeated_ids = {k: n for k, n in counts.items() if n > 1}
    found.answered_twice = sum(1 for n in successes.values() if n > 1)
