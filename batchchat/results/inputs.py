"""What export and report need of a job's input: its ids, and its columns by id (`export --join`).

The input is read the way a run reads it (the same flags: `--input-format`, `--id-column`, the defaults), so an
id here is the id the run wrote. A table's columns are its own; a JSONL input's are the request's model and
prompt text (`input.model`, `input.prompt`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from batchchat.config.settings import RunSettings
from batchchat.input.parse import Job, parse_line
from batchchat.input.plan import open_input
from batchchat.input.reader import iter_raw_lines
from batchchat.input.table_spool import table_id
from batchchat.input.tables import RowProblem, open_table


def input_ids(settings: RunSettings) -> Iterator[str]:
    """Every id of the input, in order (an invalid line's too: a run writes an error line for it)."""
    fmt = settings.table.format_of(settings.input)
    if fmt != "jsonl":  # a table's ids need no template: read them from the table itself
        id_column = settings.table.id_column
        for row_no, row in open_table(Path(settings.input), settings.input, fmt).rows:
            value = row.get(id_column) if id_column is not None and not isinstance(row, RowProblem) else None
            yield table_id(row_no) if value is None or value == "" else str(value)
        return
    with ExitStack() as stack:
        path, _display = open_input(settings.input, stack, settings)
        for line_no, raw in iter_raw_lines(path):
            yield parse_line(raw, line_no, settings.defaults).custom_id


def input_columns(settings: RunSettings) -> tuple[list[str], dict[str, tuple[Any, ...]]]:
    """The input's columns and, by id, each row's values (held in memory: the input's size)."""
    fmt = settings.table.format_of(settings.input)
    if fmt == "jsonl":
        return _jsonl_columns(settings)
    table = open_table(Path(settings.input), settings.input, fmt)
    id_column = settings.table.id_column
    names = [name for name in table.columns if name != id_column]  # the id is the row's custom_id already
    rows: dict[str, tuple[Any, ...]] = {}
    for row_no, row in table.rows:
        if isinstance(row, RowProblem):
            continue
        value = row.get(id_column) if id_column is not None else None
        key = table_id(row_no) if value is None or value == "" else str(value)
        rows[key] = tuple(row.get(name) for name in names)
    return names, rows


def _jsonl_columns(settings: RunSettings) -> tuple[list[str], dict[str, tuple[Any, ...]]]:
    rows: dict[str, tuple[Any, ...]] = {}
    with ExitStack() as stack:
        path, _display = open_input(settings.input, stack, settings)
        for line_no, raw in iter_raw_lines(path):
            item = parse_line(raw, line_no, settings.defaults)
            if isinstance(item, Job):
                rows[item.custom_id] = (item.body.get("model"), _prompt_text(item.body))
    return ["input.model", "input.prompt"], rows


def _prompt_text(body: dict[str, Any]) -> str | None:
    """The text a request asks about: its last user message, else its prompt or input when a string."""
    for message in reversed(body.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
            return None if content is None else str(content)
    for field in ("prompt", "input"):
        if isinstance(body.get(field), str):
            return body[field]
    return None
