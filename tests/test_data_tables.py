"""Tables in (#24 item 3): CSV, TSV and Parquet inputs through the real reader, plan and run.

What a user sends: quoted fields with delimiters, quotes and newlines, a BOM, ragged or empty rows, bytes that are
not UTF-8, a Parquet file of several row groups; every prompt must be the template rendered with its own row,
resume must treat an edited row as a changed request, and a bad row must say file, row and column.
"""

from __future__ import annotations

import csv
import io
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_process import cli, cli_env, run_args
from helpers import read_output, run_options
from hypothesis import given
from hypothesis import strategies as st

import batchchat
from batchchat.api import settings_for
from batchchat.errors import UsageError
from batchchat.input.parse import InvalidLine, Job, parse_line
from batchchat.input.plan import open_input, scan
from batchchat.input.reader import iter_raw_lines
from batchchat.simulator import Simulator


def write_csv(path: Path, header: list[str], rows: list[list[Any]], delimiter: str = ",", bom: bool = False) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode())
    return path


def items(path: Path, **options: Any) -> list[Job | InvalidLine]:
    """The parsed lines a run would read from `path` (through open_input's table spool)."""
    settings = settings_for(path, model="gpt-4o-mini", **options)
    with ExitStack() as stack:
        spooled, _display = open_input(settings.input, stack, settings)
        return [parse_line(raw, n, settings.defaults) for n, raw in iter_raw_lines(spooled)]


def prompt_of(job: Job | InvalidLine) -> str:
    assert isinstance(job, Job), job
    return job.body["messages"][-1]["content"]


def test_quoted_commas_newlines_quotes_and_a_bom(tmp_path: Path) -> None:
    awkward = ['a, b, "c"', "line one\nline two\r\nline three", "", "ünïcødé ✓"]
    src = write_csv(tmp_path / "in.csv", ["id", "text", "label"],
                    [[f"k{i}", text, f"L{i}"] for i, text in enumerate(awkward)], bom=True)
    got = items(src, template="Classify: {{ text }}", id_column="id")
    assert [job.custom_id for job in got] == ["k0", "k1", "k2", "k3"]
    assert [prompt_of(job) for job in got] == [f"Classify: {text}" for text in awkward]
    assert [job.metadata for job in got] == [{"label": f"L{i}"} for i in range(4)]  # type: ignore[union-attr]


def test_tsv_rows_numbered_without_an_id_column_and_a_system_template(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.tsv", ["lang", "text"], [["fr", "bonjour, monde"], ["de", "hallo\twelt"]],
                    delimiter="\t")
    got = items(src, template="{{ text }}", system_template="Answer in {{ lang }}.")
    assert [job.custom_id for job in got] == ["row-1", "row-2"]
    assert [job.body["messages"][0] for job in got] == [  # type: ignore[union-attr]
        {"role": "system", "content": "Answer in fr."}, {"role": "system", "content": "Answer in de."}]
    assert prompt_of(got[1]) == "hallo\twelt"
    assert all(job.metadata is None for job in got)  # every column is used by a template


def test_bad_rows_name_file_row_and_column(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(b"id,text\nk1,fine\nk2,one,two\n,no id\nk4,\xff\xfe bytes\nk5,also fine\n")
    settings = settings_for(src, model="gpt-4o-mini", template="{{ text }}", id_column="id")
    with ExitStack() as stack:
        path, display = open_input(settings.input, stack, settings)
        plan = scan(path, display, settings)
    assert (plan.valid, plan.invalid_count) == (2, 3)
    assert [bad.describe(plan.display) for bad in plan.invalid] == [
        f"{src}:2: the row has 3 fields, the header 2",
        f"{src}:3: column 'id': empty: every row needs an id",
        f"{src}:4: column 'text': not valid UTF-8",
    ]


@pytest.mark.parametrize(("options", "message"), [
    ({"template": "{{ txt }}"}, "--template uses txt, which {src} has no column of (its columns: id, text)"),
    ({"template": "{{ text "}, "--template: not a valid Jinja2 template (line 1:"),
    ({}, "give --template"),
    ({"template": "{{ text }}", "id_column": "key"}, "--id-column 'key': {src} has no such column"),
])
def test_a_template_or_id_column_that_cannot_work_is_refused_before_anything(
        tmp_path: Path, options: dict[str, str], message: str) -> None:
    src = write_csv(tmp_path / "in.csv", ["id", "text"], [["a", "x"]])
    with pytest.raises(UsageError, match=None) as caught:
        items(src, **options)
    assert message.format(src=src) in str(caught.value)


def test_table_flags_on_a_jsonl_input_and_an_empty_table_are_refused(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n')
    with pytest.raises(UsageError, match="apply to a CSV, TSV or Parquet input"):
        settings_for(tmp_path / "in.jsonl", template="{{ x }}")
    header_only = write_csv(tmp_path / "h.csv", ["id", "text"], [])
    with pytest.raises(UsageError, match="no rows"):
        items(header_only, template="{{ text }}")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(UsageError, match="no header row"):
        items(tmp_path / "empty.csv", template="{{ text }}")


def test_parquet_by_row_groups_with_typed_columns(tmp_path: Path) -> None:
    n = 10_000
    table = pa.table({"id": pa.array(range(n), pa.int64()), "text": [f"text {i}, with a comma" for i in range(n)],
                      "score": [i / 2 for i in range(n)], "note": [None if i % 3 else f"n{i}" for i in range(n)]})
    src = tmp_path / "in.parquet"
    pq.write_table(table, src, row_group_size=1_000)  # ten row groups
    assert pq.ParquetFile(src).num_row_groups == 10
    got = items(src, template="{{ text }} ({{ note }})", id_column="id")
    assert len(got) == n
    assert [job.custom_id for job in got[:3]] == ["0", "1", "2"]
    assert prompt_of(got[3]) == "text 3, with a comma (n3)"
    assert prompt_of(got[4]) == "text 4, with a comma ()"  # a null renders as nothing
    assert got[n - 1].metadata == {"score": (n - 1) / 2}  # type: ignore[union-attr]


def test_a_file_that_is_not_parquet_says_so(tmp_path: Path) -> None:
    (tmp_path / "in.parquet").write_text("id,text\n")
    with pytest.raises(UsageError, match="not a readable Parquet file"):
        items(tmp_path / "in.parquet", template="{{ text }}")


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), min_size=1, max_size=12))
def test_csv_round_trip_of_awkward_fields(tmp_path_factory: Any, fields: list[str]) -> None:
    """Whatever a field holds (delimiters, quotes, CR, LF, unicode, nothing), the prompt is that field."""
    src = write_csv(tmp_path_factory.mktemp("rt") / "in.csv", ["id", "text"],
                    [[f"i{n}", text] for n, text in enumerate(fields)])
    got = items(src, template="{{ text }}", id_column="id")
    assert [prompt_of(job) for job in got] == fields


def test_the_real_cli_runs_a_csv_and_resume_sees_an_edited_row(tmp_path: Path, sim: Simulator) -> None:
    src = write_csv(tmp_path / "reviews.csv", ["id", "text", "label"],
                    [[f"r{i}", f"review {i}, good", "pos"] for i in range(20)])
    flags = ("--model", "gpt-4o-mini", "--max-tokens", "8", "--template", "Classify: {{ text }}", "--id-column", "id")
    out = tmp_path / "reviews.results.jsonl"
    done = cli(*run_args(sim.base_url, src, out, *flags), env=cli_env())
    assert done.returncode == 0, done.stderr
    lines = read_output(out)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"r{i}" for i in range(20))
    assert all(line["metadata"] == {"label": "pos"} for line in lines)
    assert sim.stats()["requests"] == 20
    again = cli(*run_args(sim.base_url, src, out, *flags), env=cli_env())
    assert again.returncode == 0 and sim.stats()["requests"] == 20  # resumed: nothing to send
    rows = [[f"r{i}", f"review {i}, good" if i != 7 else "edited", "pos"] for i in range(20)]
    write_csv(src, ["id", "text", "label"], rows)
    refused = cli(*run_args(sim.base_url, src, out, *flags), env=cli_env())
    assert refused.returncode == 2 and "1 requests already answered" in refused.stderr and "'r7'" in refused.stderr
    resent = cli(*run_args(sim.base_url, src, out, *flags, "--resend-changed"), env=cli_env())
    assert resent.returncode == 0, resent.stderr
    assert sim.stats()["requests"] == 21
    assert len(read_output(out)) == 20


def test_library_run_of_a_tsv_via_both_defaults(tmp_path: Path, sim: Simulator) -> None:
    src = write_csv(tmp_path / "q.tsv", ["prompt"], [["hello"], ["world"]], delimiter="\t")
    summary = batchchat.run(src, **run_options(sim, model="gpt-4o-mini", max_tokens=4))
    assert summary.succeeded == 2 and summary.exit_code == 0
    out = tmp_path / "q.results.jsonl"
    assert {line["custom_id"] for line in read_output(out)} == {"row-1", "row-2"}
    assert orjson.loads(out.read_bytes().splitlines()[0])["line"] in (1, 2)


def test_input_format_names_the_format_and_row_reaches_awkward_column_names(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "export.txt", ["the text", "row"], [["hello, you", "7"]])
    got = items(src, input_format="csv", template='{{ row }}: {{ row["the text"] if row is mapping else "" }}')
    assert prompt_of(got[0]) == "7: "  # a column named "row" wins over the whole row
    other = write_csv(tmp_path / "other.txt", ["the text"], [["hello, you"]])
    assert prompt_of(items(other, input_format="csv", template='{{ row["the text"] }}!')[0]) == "hello, you!"
    with pytest.raises(UsageError, match="--input-format must be one of jsonl, csv, tsv, parquet"):
        settings_for(other, input_format="xlsx")


def test_a_csv_through_the_batch_api_path(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", ["id", "text"], [[f"b{i}", f"text {i}, quoted \"x\""] for i in range(12)])
    out = tmp_path / "out.jsonl"
    done = cli("run", src, "-o", out, "--via", "batch", "--simulate", "--model", "gpt-4o-mini", "--max-tokens", "4",
               "--template", "Say: {{ text }}", "--id-column", "id", "--progress", "off", env=cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(line["custom_id"] for line in read_output(out)) == sorted(f"b{i}" for i in range(12))
