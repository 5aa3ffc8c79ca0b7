"""Tables out and the reconciliation report (#24 items 4 and 5), on outputs of real runs against the simulator and
on hand-made Batch API output lines (the shapes a provider sends: 4xx answers with no error, repeated ids)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from cli_process import cli, cli_env, run_args
from helpers import chat_lines, read_output, run_options, write_jobs
from hypothesis import given
from hypothesis import strategies as st

import batchchat
from batchchat.results.export import export
from batchchat.results.flat import COLUMNS, _flatten, flatten
from batchchat.simulator import Simulator


def batch_line(custom_id: str, status: int, body: dict[str, Any], error: Any = None) -> dict[str, Any]:
    return {"id": f"batch_req_{custom_id}", "custom_id": custom_id, "error": error,
            "response": {"status_code": status, "request_id": f"req_{custom_id}", "body": body}}


def chat_body(text: str, model: str = "gpt-4o-mini", tier: str | None = "default") -> dict[str, Any]:
    return {"object": "chat.completion", "model": model, "service_tier": tier,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 2}}}


def test_a_run_exported_to_parquet_is_read_back_by_pyarrow(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", [{**line, "metadata": {"row": i, "group": "g" if i % 2 else "h"}}
                                             for i, line in enumerate(chat_lines(30))]
                     + [{"custom_id": "e1", "model": "text-embedding-3-small", "input": "embed me"}])
    batchchat.run(src, tmp_path / "out.jsonl", **run_options(sim))
    done = cli("export", tmp_path / "out.jsonl", "-o", tmp_path / "flat.parquet", "--join", src)
    assert done.returncode == 0, done.stderr
    assert "31 rows" in done.stdout
    table = pq.read_table(tmp_path / "flat.parquet")
    for line in read_output(tmp_path / "out.jsonl"):  # the fast path for common lines says what the careful one does
        assert flatten(line) == _flatten(line)
    assert table.column_names[:len(COLUMNS)] == list(COLUMNS)
    assert {"embedding", "row", "group", "input.model", "input.prompt"} <= set(table.column_names)
    rows = {row["custom_id"]: row for row in table.to_pylist()}
    lines = {line["custom_id"]: line for line in read_output(tmp_path / "out.jsonl")}
    r3 = rows["r3"]
    assert r3["status"] == "ok" and r3["content"] == lines["r3"]["response"]["body"]["choices"][0]["message"]["content"]
    assert (r3["prompt_tokens"], r3["completion_tokens"]) == (lines["r3"]["usage"]["prompt_tokens"],
                                                             lines["r3"]["usage"]["completion_tokens"])
    assert r3["cost_usd"] == pytest.approx(lines["r3"]["cost_usd"]) and r3["row"] == 3 and r3["group"] == "g"
    assert r3["input.prompt"] == "Say something about the number 3." and r3["input.model"] == "gpt-4o-mini"
    assert table.schema.field("row").type == "int64"
    embedding = rows["e1"]["embedding"]
    assert embedding == lines["e1"]["response"]["body"]["data"][0]["embedding"] and rows["e1"]["content"] is None


def test_batch_shapes_flatten_and_csv_and_jsonl_exports(tmp_path: Path) -> None:
    out = write_jobs(tmp_path / "batch_out.jsonl", [
        batch_line("a", 200, chat_body("fine, \"quoted\"\nanswer")),
        batch_line("b", 400, {"error": {"code": "invalid_value", "message": "bad max_tokens"}}),
        batch_line("c", 200, chat_body("first")),
        {**batch_line("c", 500, {}), "error": {"code": "server_error", "message": "boom"}},
        batch_line("d", 200, {"object": "response", "model": "gpt-4o", "status": "completed",
                              "output": [{"type": "message", "content": [{"type": "output_text", "text": "resp"}]}],
                              "usage": {"input_tokens": 7, "output_tokens": 3}}),
    ])
    report = export(out, tmp_path / "flat.csv")
    assert (report.rows, report.skipped_repeats) == (4, 1)  # c: its success wins over the later error
    with (tmp_path / "flat.csv").open(newline="", encoding="utf-8") as handle:
        rows = {row["custom_id"]: row for row in csv.DictReader(handle)}
    assert rows["a"]["content"] == 'fine, "quoted"\nanswer' and rows["a"]["service_tier"] == "default"
    assert (rows["a"]["cached_tokens"], rows["a"]["reasoning_tokens"]) == ("4", "2")
    assert (rows["b"]["status"], rows["b"]["error_code"], rows["b"]["error_message"]) == (
        "failed", "invalid_value", "bad max_tokens")
    assert rows["c"]["status"] == "ok" and rows["c"]["content"] == "first"
    assert (rows["d"]["content"], rows["d"]["prompt_tokens"], rows["d"]["finish_reason"]) == ("resp", "7", "completed")
    export(out, tmp_path / "flat.jsonl")
    flat = [orjson.loads(line) for line in (tmp_path / "flat.jsonl").read_bytes().splitlines()]
    assert [row["custom_id"] for row in flat] == ["a", "b", "c", "d"]


@given(st.lists(st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                          st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                          st.lists(st.integers(-99, 99), max_size=3)), min_size=1, max_size=20))
def test_metadata_values_of_any_kind_survive_a_parquet_export(tmp_path_factory: Any, values: list[Any]) -> None:
    work = tmp_path_factory.mktemp("meta")
    out = write_jobs(work / "out.jsonl", [{**batch_line(f"i{n}", 200, chat_body("x")), "metadata": {"v": v}}
                                          for n, v in enumerate(values)])
    export(out, work / "flat.parquet")
    got = pq.read_table(work / "flat.parquet").column("v").to_pylist()
    kinds = {type(v) for v in values if v is not None}
    for value, back in zip(values, got, strict=True):
        if value is None:
            assert back is None
        elif kinds <= {int, float} and bool not in kinds and int in kinds and float in kinds:
            assert back == pytest.approx(float(value))
        elif len(kinds) == 1 and kinds != {list}:
            assert back == value
        else:  # a mix of kinds, or lists: JSON text
            assert back == (value if isinstance(value, str) else orjson.dumps(value).decode())


def test_report_counts_ids_and_exits_9_when_some_are_missing(tmp_path: Path, simulator: Any) -> None:
    sim = simulator(fault_rates={"500": 0.3}, seed=3)
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(60))
    out = tmp_path / "out.jsonl"
    done = cli(*run_args(sim.base_url, src, out, "--max-attempts", "1"), env=cli_env())
    assert done.returncode == 1, done.stderr
    lines = read_output(out)
    failed = sum(1 for line in lines if line["error"])
    assert 0 < failed < 60
    clean = cli("report", out, "--input", src, "--json", tmp_path / "r.json", "--plot", tmp_path / "r.png")
    assert clean.returncode == 1, clean.stderr  # some failed, none missing
    account = orjson.loads((tmp_path / "r.json").read_bytes())
    assert (account["ok"], account["failed"], account["missing"]) == (60 - failed, {"http_500": failed}, 0)
    assert account["by_model"][0]["prompt_tokens"] == sum(line["usage"]["prompt_tokens"] for line in lines
                                                          if not line["error"])
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    kept = [line for line in lines if line["custom_id"] not in ("r5", "r6")]
    write_jobs(out, [*kept, {**kept[0], "custom_id": "stranger"}, kept[1]])  # two missing, one unexpected, a repeat
    broken = cli("report", out, "--input", src)
    assert broken.returncode == 9, broken.stdout
    assert "missing    2 ids of the input have no line (r5, r6)" in broken.stdout
    assert "unexpected 1 ids not in the input (stranger)" in broken.stdout
    assert f"repeated   1 ids with several lines ({kept[1]['custom_id']})" in broken.stdout


def test_report_finds_4xx_inside_200_and_reads_table_ids(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("key,text\na,x\nb,y\nc,z\n")
    out = write_jobs(tmp_path / "out.jsonl", [batch_line("a", 200, chat_body("ok")),
                                              batch_line("b", 400, {"error": {"code": "invalid_value"}})])
    done = cli("report", out, "--input", src, "--id-column", "key")
    assert done.returncode == 9
    assert "1 ok, 1 failed" in done.stdout and "invalid_value 1" in done.stdout
    assert "4xx in 200 1 lines" in done.stdout and "missing    1 ids of the input have no line (c)" in done.stdout


def test_missing_pyarrow_is_one_clear_line(tmp_path: Path) -> None:
    out = write_jobs(tmp_path / "out.jsonl", [batch_line("a", 200, chat_body("ok"))])
    code = ("import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
            "from batchchat.cli.commands import main\n"
            "sys.argv = ['batchchat', 'export', sys.argv[1], '-o', sys.argv[2]]; main()")
    done = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "x.parquet")], capture_output=True,
                          text=True, env=cli_env(), timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("batchchat: error: reading or writing Parquet needs pyarrow: "
                                   "pip install 'batchchat[tables]'")
    assert not (tmp_path / "x.parquet").exists()
