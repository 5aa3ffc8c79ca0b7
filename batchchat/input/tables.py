"""Rows of a CSV, TSV or Parquet input, one dict per row (column name -> value), in bounded memory.

CSV and TSV are read with the standard library (quoted fields may hold delimiters, quotes and newlines; a UTF-8
BOM is dropped); Parquet with pyarrow (the `tables` extra), a batch of rows at a time from one row group at a
time, so a file of any size costs one batch. Rows are numbered from 1 after the header; blank CSV lines are not
rows. A row that cannot be read whole (a wrong number of fields, bytes that are not UTF-8) comes as a
`RowProblem`, which becomes an invalid line of the plan like a bad JSONL line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchchat.errors import UsageError
from batchchat.input.reader import MAX_LINE_BYTES

MISSING_PYARROW = "reading or writing Parquet needs pyarrow: pip install 'batchchat[tables]'"
PARQUET_BATCH_ROWS = 4096  # rows turned into Python values at a time


@dataclass(slots=True)
class RowProblem:
    """A row that cannot become a request: the column at fault (None: the whole row) and why."""

    field: str | None
    reason: str


@dataclass(slots=True)
class Table:
    """An open table input: its column names, and its rows (`row_no`, values or a `RowProblem`) read lazily."""

    columns: list[str]
    rows: Iterator[tuple[int, dict[str, Any] | RowProblem]]


def open_table(path: Path, display: str, fmt: str) -> Table:
    """Open `path` as a table of format `fmt` (csv, tsv or parquet); a file that is not one raises `UsageError`."""
    if fmt in ("csv", "tsv"):
        return _open_delimited(path, display, "," if fmt == "csv" else "\t")
    if fmt == "parquet":
        return _open_parquet(path, display)
    raise UsageError(f"{display}: {fmt!r} is not a table format (csv, tsv or parquet)")


def column_label(name: str) -> str:
    """How messages name a column."""
    return f"column {name!r}"


def _open_delimited(path: Path, display: str, delimiter: str) -> Table:
    csv.field_size_limit(MAX_LINE_BYTES)
    handle = path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(handle, delimiter=delimiter)
    try:
        header = next((fields for fields in reader if fields), None)
    except csv.Error as exc:
        handle.close()
        raise UsageError(f"{display}: the header row cannot be read ({exc})") from None
    if header is None:
        handle.close()
        raise UsageError(f"{display}: no header row (the file is empty)")
    columns = [name.strip() for name in header]
    try:
        _check_columns(columns, display)
    except UsageError:
        handle.close()
        raise
    return Table(columns, _delimited_rows(handle, reader, columns, display))


def _check_columns(columns: list[str], display: str) -> None:
    for index, name in enumerate(columns):
        if _not_utf8(name):
            raise UsageError(f"{display}: the header is not valid UTF-8 (column {index + 1})")
        if not name:
            raise UsageError(f"{display}: column {index + 1} of the header has no name")
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise UsageError(f"{display}: the header names {name!r} twice")
        seen.add(name)


def _delimited_rows(handle: Any, reader: Any, columns: list[str],
                    display: str) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    width = len(columns)
    row_no = 0
    with handle:
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise UsageError(f"{display}: row {row_no + 1} (file line {reader.line_num}) cannot be read: "
                                 f"{exc}") from None
            if not fields:
                continue  # a blank line
            row_no += 1
            if len(fields) != width:
                yield row_no, RowProblem(None, f"the row has {len(fields)} fields, the header {width}")
                continue
            bad = next((name for name, value in zip(columns, fields, strict=True) if _not_utf8(value)), None)
            if bad is not None:
                yield row_no, RowProblem(column_label(bad), "not valid UTF-8")
                continue
            yield row_no, dict(zip(columns, fields, strict=True))


def _not_utf8(value: str) -> bool:
    """Whether a field read with `surrogateescape` held bytes that are not UTF-8."""
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _open_parquet(path: Path, display: str) -> Table:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(MISSING_PYARROW) from None
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"{display}: not a readable Parquet file ({exc})") from None
    columns = list(parquet.schema_arrow.names)
    _check_columns(columns, display)
    return Table(columns, _parquet_rows(parquet, display))


def _parquet_rows(parquet: Any, display: str) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    import pyarrow as pa

    row_no = 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, use_threads=False):
            for row in batch.to_pylist():
                row_no += 1
                yield row_no, row
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"{display}: row {row_no + 1} onwards cannot be read ({exc})") from None
    finally:
        parquet.close()
