"""`batchchat export OUTPUT -o FILE.parquet|.csv|.jsonl`: one flat row per id, for pandas, polars or a spreadsheet.

Columns: the fixed ones of `results.flat.COLUMNS`; `embedding` (a list column, a list of lists when a request
embedded several inputs) when the output holds embeddings; the keys of `parsed` (a structured answer) and of
`metadata` as columns of their own; with `join`, the input's columns by id. A name already taken gets a prefix
(`metadata.`, `input.`). A column's type follows its values (numbers widen to float; a mix of kinds, objects
and lists are JSON text). Two passes over the output, in bounded memory (rows go out in chunks; only `join`
holds the input's columns); the file is written beside the destination and renamed over it when whole.
Parquet needs pyarrow (`batchchat[tables]`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchchat.errors import UsageError
from batchchat.input.tables import MISSING_PYARROW
from batchchat.results.flat import COLUMNS, KINDS, flatten, kind_of, merge_kinds
from batchchat.results.scan import OutputScan, iter_lines, scan_output

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
CHUNK_ROWS = 65_536


@dataclass(slots=True)
class ExportReport:
    """What an export wrote."""

    path: Path
    rows: int
    columns: list[str]
    skipped_repeats: int  # lines not exported because another line of their id counts

    def render(self) -> str:
        """One line for a person."""
        repeats = f" ({self.skipped_repeats:,} repeated lines of an id left out)" if self.skipped_repeats else ""
        return f"{self.path}: {self.rows:,} rows, {len(self.columns)} columns{repeats}"


@dataclass(slots=True)
class _Column:
    name: str
    kind: str  # str, int, float, bool, json, vector, vectors
    get: Callable[[dict[str, Any], Any, dict[str, Any], dict[str, Any], tuple[Any, ...] | None], Any]


def export(output: Path, dest: Path, fmt: str | None = None,
           join: tuple[list[str], dict[str, tuple[Any, ...]]] | None = None) -> ExportReport:
    """Write the flat rows of `output` to `dest` (format by `fmt` or the extension); `join`: the input's columns
    and rows by id (`results.inputs.input_columns`)."""
    fmt = fmt or FORMATS.get(dest.suffix.lower())
    if fmt not in ("parquet", "csv", "jsonl"):
        raise UsageError(f"export: cannot tell the format of {dest} (give a .parquet, .csv or .jsonl name, or "
                         "--format)")
    if not output.is_file():
        raise UsageError(f"export: output {output} does not exist or is not a file")
    found = scan_output(output)
    columns = _columns(found, join)
    sink = _open_sink(fmt, dest, columns)
    rows = 0
    chunk: list[list[Any]] = []
    joined = join[1] if join is not None else None
    dynamic = columns[len(COLUMNS):]  # the fixed columns come first, straight from the flat row
    try:
        for index, line in iter_lines(output):
            if index in found.losers:
                continue
            flat, embedding, metadata, parsed = flatten(line)
            extra = joined.get(flat["custom_id"]) if joined is not None else None
            row = [flat[name] for name in COLUMNS]
            if dynamic:
                metadata, parsed = metadata or {}, parsed or {}
                row += [c.get(flat, embedding, metadata, parsed, extra) for c in dynamic]
            chunk.append(row)
            if len(chunk) >= CHUNK_ROWS:
                sink.write(chunk)
                rows += len(chunk)
                chunk = []
        sink.write(chunk)
        rows += len(chunk)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    os.replace(sink.tmp, dest)
    return ExportReport(dest, rows, [c.name for c in columns], len(found.losers))


def _columns(found: OutputScan, join: tuple[list[str], dict[str, tuple[Any, ...]]] | None) -> list[_Column]:
    columns = [_Column(name, KINDS[name], lambda f, e, m, p, x, n=name: f[n]) for name in COLUMNS]
    taken = set(COLUMNS)
    if found.embedding is not None:
        columns.append(_Column("embedding", found.embedding, lambda f, e, m, p, x: e))
        taken.add("embedding")
    for prefix, keys, source in (("parsed.", found.parsed, 3), ("metadata.", found.metadata, 2)):
        for key, kinds in keys.items():
            name = key if key not in taken else prefix + key
            taken.add(name)
            if source == 3:
                columns.append(_Column(name, merge_kinds(kinds), lambda f, e, m, p, x, k=key: p.get(k)))
            else:
                columns.append(_Column(name, merge_kinds(kinds), lambda f, e, m, p, x, k=key: m.get(k)))
    if join is not None:
        names, rows = join
        kinds: list[set[str]] = [set() for _ in names]
        for values in rows.values():
            for i, value in enumerate(values):
                kind = kind_of(value)
                if kind is not None:
                    kinds[i].add(kind)
        for i, key in enumerate(names):
            if key in found.metadata:
                continue  # the run carried it as metadata already: the same values
            name = key if key not in taken else "input." + key
            taken.add(name)
            columns.append(_Column(name, merge_kinds(kinds[i]),
                                   lambda f, e, m, p, x, i=i: x[i] if x is not None else None))
    return columns


def _json_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


class _Sink:
    def __init__(self, dest: Path, columns: list[_Column]) -> None:
        self.tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        self.columns = columns

    def write(self, rows: list[list[Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        try:
            self.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class _JsonlSink(_Sink):
    def __init__(self, dest: Path, columns: list[_Column]) -> None:
        super().__init__(dest, columns)
        self._handle = self.tmp.open("wb")
        self._names = [c.name for c in columns]

    def write(self, rows: list[list[Any]]) -> None:
        names = self._names
        self._handle.write(b"".join(orjson.dumps(dict(zip(names, row, strict=True)), default=str,
                                                 option=orjson.OPT_APPEND_NEWLINE) for row in rows))

    def close(self) -> None:
        self._handle.close()


class _CsvSink(_Sink):
    def __init__(self, dest: Path, columns: list[_Column]) -> None:
        super().__init__(dest, columns)
        self._handle = self.tmp.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._handle)
        self._writer.writerow([c.name for c in columns])
        self._plain = [c.kind in ("str", "int", "float", "bool") for c in columns]

    def write(self, rows: list[list[Any]]) -> None:
        plain = self._plain
        self._writer.writerows([v if p or v is None else _json_text(v) for v, p in zip(row, plain, strict=True)]
                               for row in rows)

    def close(self) -> None:
        self._handle.close()


class _ParquetSink(_Sink):
    def __init__(self, dest: Path, columns: list[_Column]) -> None:
        super().__init__(dest, columns)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError(MISSING_PYARROW) from None
        self._pa = pa
        types = {"str": pa.string(), "json": pa.string(), "int": pa.int64(), "float": pa.float64(),
                 "bool": pa.bool_(), "vector": pa.list_(pa.float64()), "vectors": pa.list_(pa.list_(pa.float64()))}
        self._types = [types[c.kind] for c in columns]
        self._json = [c.kind == "json" for c in columns]
        self._schema = pa.schema([(c.name, t) for c, t in zip(columns, self._types, strict=True)])
        self._writer = pq.ParquetWriter(self.tmp, self._schema, compression="zstd")

    def write(self, rows: list[list[Any]]) -> None:
        if not rows:
            return
        pa = self._pa
        arrays = []
        for i, kind in enumerate(self._types):
            values = [row[i] for row in rows]
            if self._json[i]:
                values = [_json_text(v) for v in values]
            elif kind == pa.float64():
                values = [float(v) if v is not None else None for v in values]
            arrays.append(pa.array(values, type=kind))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def _open_sink(fmt: str, dest: Path, columns: list[_Column]) -> _Sink:
    if not dest.parent.is_dir():
        raise UsageError(f"export: directory {dest.parent} does not exist")
    sinks: dict[str, type[_Sink]] = {"parquet": _ParquetSink, "csv": _CsvSink, "jsonl": _JsonlSink}
    return sinks[fmt](dest, columns)
