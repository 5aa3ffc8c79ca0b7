"""Bad input through the real CLI: every case gets a clear message and its exit code, never a traceback.

The case list below is also the table in docs/bad-input.md; `test_the_docs_table_is_the_case_list` keeps
the two the same (regenerate with `.venv/bin/python tests/test_survival_input.py`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_process import cli, cli_args, cli_env, parse_output

from batchchat.simulator import Simulator, SimulatorConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-input.md"
GOOD = b'{"custom_id": "good", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
MSG = '"messages": [{"role": "user", "content": "hi"}]'
IS_ROOT = os.geteuid() == 0


def j(text: str) -> bytes:
    return text.encode()


@dataclass(frozen=True)
class Case:
    """One bad input. `line` cases put `content` before a good line: the run goes on (exit 1), and the bad
    line gets an error line in the output; the others stop before anything is sent."""

    name: str
    what: str  # the input, for the docs table
    exit: int
    message: str  # must appear in stderr (or, for `in_output_only` line cases, in the error line)
    content: bytes | None = None  # the bytes of in.jsonl (None: a plain good file)
    args: tuple[str, ...] = ()  # extra flags; {in} and {out} are replaced by the paths
    line: bool = False  # a skippable bad line
    in_output_only: bool = False  # the message is in the output's error line, not on stderr
    error_code: str = "invalid_request"
    prepare: Callable[[Path], None] | None = None  # sets up files (cwd is its argument)
    input_path: str = "in.jsonl"
    output_path: str = "out.jsonl"
    root_blind: bool = False  # file permissions do not bind root: run as root, the CLI drops its capabilities


def _mkdir(name: str) -> Callable[[Path], None]:
    return lambda cwd: (cwd / name).mkdir()


def _write(name: str, data: bytes, mode: int | None = None) -> Callable[[Path], None]:
    def prepare(cwd: Path) -> None:
        (cwd / name).write_bytes(data)
        if mode is not None:
            (cwd / name).chmod(mode)

    return prepare


CASES: list[Case] = [
    # -- lines that are skipped: an error line in the output, the rest of the file runs (exit 1)
    Case("not-json", "`{not json`", 1, "in.jsonl:1: not valid JSON", b"{not json", line=True),
    Case("array", "`[1, 2]` (JSON, not an object)", 1, "in.jsonl:1: expected a JSON object, got an array",
         b"[1, 2]", line=True),
    Case("string", '`"hello"` (JSON, not an object)', 1, "in.jsonl:1: expected a JSON object, got a string",
         b'"hello"', line=True),
    Case("null", "`null`", 1, "in.jsonl:1: expected a JSON object, got null", b"null", line=True),
    Case("no-messages", '`{"model": "m"}` (no messages, prompt or input)', 1,
         'in.jsonl:1: messages: missing: give "messages", "prompt" or "input", or a Batch API line',
         b'{"custom_id": "bad", "model": "m"}', line=True),
    Case("no-model", "a chat body without `model` and no `--model`", 1,
         "in.jsonl:1: model: missing (give it in the line or with --model)",
         j('{"custom_id": "bad", ' + MSG + "}"), line=True),
    Case("batch-no-body", "a Batch API line without `body`", 1, "in.jsonl:1: body: must be a JSON object, got null",
         b'{"custom_id": "bad", "url": "/v1/chat/completions"}', line=True),
    Case("messages-string", '`"messages": "hi"`', 1, "in.jsonl:1: messages: must be a non-empty array, got a string",
         b'{"custom_id": "bad", "model": "m", "messages": "hi"}', line=True),
    Case("messages-empty", '`"messages": []`', 1, "in.jsonl:1: messages: must be a non-empty array, got an array",
         b'{"custom_id": "bad", "model": "m", "messages": []}', line=True),
    Case("message-no-role", 'a message without `role`', 1, "in.jsonl:1: messages[0].role: missing or not a string",
         b'{"custom_id": "bad", "model": "m", "messages": [{"content": "hi"}]}', line=True),
    Case("model-number", '`"model": 5`', 1, "in.jsonl:1: model: must be a non-empty string, got a number",
         j('{"custom_id": "bad", "model": 5, ' + MSG + "}"), line=True),
    Case("max-tokens-string", '`"max_tokens": "10"`', 1, 'in.jsonl:1: max_tokens: must be a positive integer, got "10"',
         j('{"custom_id": "bad", "model": "m", "max_tokens": "10", ' + MSG + "}"), line=True),
    Case("max-tokens-negative", '`"max_tokens": -1`', 1, "in.jsonl:1: max_tokens: must be a positive integer, got -1",
         j('{"custom_id": "bad", "model": "m", "max_tokens": -1, ' + MSG + "}"), line=True),
    Case("temperature-string", '`"temperature": "hot"`', 1, "in.jsonl:1: temperature: must be a number, got a string",
         j('{"custom_id": "bad", "model": "m", "temperature": "hot", ' + MSG + "}"), line=True),
    Case("custom-id-number", '`"custom_id": 7`', 1, "in.jsonl:1: custom_id: must be a non-empty string, got a number",
         j('{"custom_id": 7, "model": "m", ' + MSG + "}"), line=True),
    Case("embeddings-input-number", 'an embeddings line with `"input": 5`', 1,
         "in.jsonl:1: input: must be a string or a non-empty array, got a number",
         b'{"custom_id": "bad", "url": "/v1/embeddings", "body": {"model": "e", "input": 5}}', line=True),
    Case("unknown-url", '`"url": "/v1/images/generations"`', 1,
         "in.jsonl:1: url: '/v1/images/generations' is not a supported endpoint",
         b'{"custom_id": "bad", "url": "/v1/images/generations", "body": {"model": "m", "prompt": "cat"}}',
         line=True),
    Case("method-get", '`"method": "GET"`', 1, 'in.jsonl:1: method: must be "POST", got "GET"',
         j('{"custom_id": "bad", "method": "GET", "url": "/v1/chat/completions", "body": {"model": "m", '
           + MSG + "}}"), line=True),
    Case("stream-true", '`"stream": true`', 1,
         "in.jsonl:1: stream: true is not supported: batchchat collects whole responses",
         j('{"custom_id": "bad", "model": "m", "stream": true, ' + MSG + "}"), line=True),
    Case("stream-string", '`"stream": "True"`', 1, "in.jsonl:1: stream: must be a boolean, got a string",
         j('{"custom_id": "bad", "model": "m", "stream": "True", ' + MSG + "}"), line=True),
    Case("prompt-and-messages", 'a chat line with both `"prompt"` and `"messages"`', 1,
         'in.jsonl:1: prompt: not allowed beside "messages" (a chat request takes one or the other)',
         j('{"custom_id": "bad", "model": "m", "prompt": "hi", ' + MSG + "}"), line=True),
    Case("invalid-utf8", "bytes `ff fe` inside a line (invalid UTF-8)", 1, "in.jsonl:1: line is not valid UTF-8",
         b'{"custom_id": "bad", "model": "m\xff\xfe", ' + MSG.encode() + b"}", line=True),
    Case("line-10mb", "a 10 MB line (the limit is 8 MiB)", 1,
         "in.jsonl:1: line is longer than the 8,388,608 bytes allowed",
         b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * (10 * 1024 * 1024) + b'"}]}',
         line=True),
    Case("line-20mb-no-newline", "a 20 MB line with no newline at all, then nothing", 2,
         "in.jsonl:1: line is longer than the 8,388,608 bytes allowed", b"x" * (20 * 1024 * 1024)),
    Case("over-token-budget", '`"max_tokens": 5000` with `--tpm 1000`', 1,
         "the request is estimated at 5,0", j('{"custom_id": "bad", "model": "m", "max_tokens": 5000, ' + MSG + "}"),
         args=("--tpm", "1000"), line=True, in_output_only=True, error_code="request_too_large"),
    # -- the whole file is refused, nothing is sent (exit 2)
    Case("duplicate-id", "two lines with `custom_id` `a`", 2,
         "custom_id must be unique within a file:\nin.jsonl:2: custom_id: 'a' is also on line 1",
         j('{"custom_id": "a", "model": "m", ' + MSG + '}\n{"custom_id": "a", "model": "m", ' + MSG + "}")),
    Case("empty-file", "an empty file", 2, "in.jsonl: no requests (the file is empty or has only blank lines)", b""),
    Case("blank-lines", "only blank lines (`\\n`, spaces, `\\r\\n`)", 2,
         "in.jsonl: no requests (the file is empty or has only blank lines)", b"\n   \n\r\n\n"),
    Case("all-invalid", "every line invalid", 2, "2 invalid lines (no line is valid); nothing was sent",
         b"{not json\n[1]"),
    Case("strict", "one bad line with `--strict`", 2, "1 invalid lines (--strict is set); nothing was sent",
         b"{not json\n" + GOOD, args=("--strict",)),
    Case("no-input", "an input path that does not exist", 2, "input missing.jsonl does not exist",
         input_path="missing.jsonl"),
    Case("input-dir", "the input is a directory", 2, "input adir is a directory, not a JSONL file",
         input_path="adir", prepare=_mkdir("adir")),
    Case("input-unreadable", "an unreadable input (mode 000)", 2, "cannot read input locked.jsonl: Permission denied",
         input_path="locked.jsonl", prepare=_write("locked.jsonl", GOOD + b"\n", 0o000), root_blind=True),
    Case("output-dir-missing", "`-o nodir/out.jsonl`, no such directory", 2, "output directory nodir does not exist",
         output_path="nodir/out.jsonl"),
    Case("output-not-writable", "an existing read-only output (mode 444)", 2, "output ro.jsonl is not writable",
         output_path="ro.jsonl", prepare=_write("ro.jsonl", b"", 0o444)),
    Case("output-is-input", "`-o` naming the input file", 2, "output in.jsonl is the input file; choose another -o",
         output_path="in.jsonl"),
    Case("output-is-dir", "`-o` naming a directory", 2, "output odir is a directory",
         output_path="odir", prepare=_mkdir("odir")),
    Case("output-dev-null", "`-o /dev/null` (or `/dev/stdout`, a FIFO: not a regular file)", 2,
         "output /dev/null is not a regular file (a pipe, a terminal or a device); use -o - to stream results",
         output_path="/dev/null"),
    Case("output-foreign", "an existing output whose lines are not batchchat results", 2,
         "out.jsonl:1: not a batchchat result line; refusing to append to this output",
         prepare=_write("out.jsonl", b'{"hello": "world"}\n')),
    Case("rpm-zero", "`--rpm 0`", 2, "--rpm must be a positive number, got 0", args=("--rpm", "0")),
    Case("rpm-negative", "`--rpm -5`", 2, "--rpm must be a positive number, got -5", args=("--rpm=-5",)),
    Case("tpm-negative", "`--tpm -1`", 2, "--tpm must be a positive number, got -1", args=("--tpm=-1",)),
    Case("concurrency-zero", "`--concurrency 0`", 2, "--concurrency must be at least 1, got 0",
         args=("--concurrency", "0")),
    Case("concurrency-negative", "`--concurrency -2`", 2, "--concurrency must be at least 1, got -2",
         args=("--concurrency=-2",)),
    Case("concurrency-text", "`--concurrency abc`", 2, "Invalid value for '--concurrency'",
         args=("--concurrency", "abc")),
    Case("max-attempts-zero", "`--max-attempts 0`", 2, "--max-attempts must be at least 1, got 0",
         args=("--max-attempts", "0")),
    Case("max-tokens-zero", "`--max-tokens 0`", 2, "--max-tokens must be at least 1, got 0",
         args=("--max-tokens", "0")),
    Case("timeout-zero", "`--timeout 0`", 2, "--timeout and --connect-timeout must be positive",
         args=("--timeout", "0")),
    Case("grace-negative", "`--grace -1`", 2, "--grace must be 0 or more, got -1", args=("--grace=-1",)),
    Case("progress-unknown", "`--progress sideways`", 2, "--progress must be one of auto, bar, log, off",
         args=("--progress", "sideways")),
    Case("header-malformed", "`-H nocolon`", 2, "--header must look like 'Name: value', got 'nocolon'",
         args=("-H", "nocolon")),
    Case("config-missing", "`--config nowhere.toml`", 2, "config file nowhere.toml does not exist",
         args=("--config", "nowhere.toml")),
    Case("unknown-flag", "`--bogus`", 2, "No such option: --bogus", args=("--bogus",)),
]

REPAIR_MESSAGE = "removed a torn last line"
TYPO_MESSAGE = ("model 'gpt-4o-mnii' at URL: the first N attempts all failed the same way: HTTP 404: … ; its other "
                "lines get this error without being sent, and the rest of the run goes on")


@pytest.fixture(scope="module")
def server() -> Iterator[Simulator]:
    with Simulator.in_thread(SimulatorConfig()) as sim:
        yield sim


def _run_case(case: Case, cwd: Path, sim: Simulator) -> tuple[int, str, str]:
    if case.content is None:
        data = GOOD + b"\n"
    elif case.line:
        data = case.content + b"\n" + GOOD + b"\n"
    else:
        data = case.content + b"\n" if case.content else b""
    (cwd / "in.jsonl").write_bytes(data)
    if case.prepare:
        case.prepare(cwd)
    args = ["run", case.input_path, "-o", case.output_path, "--base-url", sim.base_url, "--max-attempts", "1"]
    if "--progress" not in case.args:
        args += ["--progress", "off"]
    if case.root_blind and IS_ROOT:
        # root reads any file whatever its mode: run the CLI without the capabilities that let it (setpriv
        # drops them from the bounding set, so the exec'd process lacks them), and file modes bind again
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file modes cannot be made to bind")
        proc = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                               *cli_args(*args, *case.args)], env=cli_env(), capture_output=True, text=True,
                              timeout=60, cwd=cwd)
    else:
        proc = cli(*args, *case.args, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def _flat(text: str) -> str:
    """Click's error box wraps and frames its message: unframe it."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, server: Simulator) -> None:
    server.reset_stats()
    code, out, err = _run_case(case, tmp_path, server)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code == case.exit, f"exit {code}, stderr:\n{err}"
    if case.line:
        lines = {line["custom_id"]: line for line in parse_output(tmp_path / "out.jsonl")}
        assert len(lines) == 2, lines.keys()
        assert lines["good"]["error"] is None
        (bad_id,) = set(lines) - {"good"}
        bad = lines[bad_id]
        assert bad["error"]["code"] == case.error_code and case.message in bad["error"]["message"], bad["error"]
        assert bad["response"] is None and bad["attempts"] == 0  # nothing was sent for it
        assert server.stats()["requests"] == 1
        if not case.in_output_only:
            assert case.message in err
    else:
        assert case.message in (_flat(err) if "No such option" in case.message or "Invalid value" in case.message
                                else err), err
        assert server.stats()["requests"] == 0
        if case.exit == 2 and case.output_path == "out.jsonl" and not case.prepare:
            assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").stat().st_size == 0


def test_a_torn_last_line_is_repaired_with_a_message(tmp_path: Path, server: Simulator) -> None:
    lines = [j(f'{{"custom_id": "r{i}", "model": "gpt-4o-mini", ' + MSG + "}") for i in range(3)]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    first = cli("run", "in.jsonl", "-o", "out.jsonl", "--base-url", server.base_url, "--progress", "off",
                cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    whole = (tmp_path / "out.jsonl").read_bytes()
    kept = whole.splitlines(keepends=True)[:2]
    torn = whole.splitlines(keepends=True)[2][:40]
    (tmp_path / "out.jsonl").write_bytes(b"".join(kept) + torn)
    server.reset_stats()
    second = cli("run", "in.jsonl", "-o", "out.jsonl", "--base-url", server.base_url, "--progress", "off",
                 cwd=tmp_path)
    assert "Traceback" not in second.stderr
    assert second.returncode == 0, second.stderr
    assert f"out.jsonl: {REPAIR_MESSAGE} ({len(torn)} bytes) left by an interrupted run" in second.stderr
    out = parse_output(tmp_path / "out.jsonl")
    assert sorted(line["custom_id"] for line in out) == ["r0", "r1", "r2"]
    assert server.stats()["requests"] == 1


def test_every_case_is_a_different_input() -> None:
    """Each case stages an input of its own (a copied case would test nothing new) under a name of its own."""
    assert len({c.name for c in CASES}) == len(CASES)
    assert len({c.what for c in CASES}) == len(CASES)
    staged = [(c.content, c.args, c.line, c.input_path, c.output_path, c.prepare is not None and c.what)
              for c in CASES]
    assert len(set(staged)) == len(staged)


def render_table() -> str:
    """docs/bad-input.md, from the case list."""
    rows = [
        "# Bad input: what batchchat says, and how it exits",
        "",
        "Generated from the case list in `tests/test_survival_input.py`, where every row is run through the real",
        "CLI (`python -m batchchat run in.jsonl -o out.jsonl ...`) and its message and exit code are checked; no",
        "case prints a traceback. Regenerate with `.venv/bin/python tests/test_survival_input.py`.",
        "",
        "Exit codes: 0 every request succeeded, 1 some failed (their output lines say why), 2 usage or input",
        "error (nothing was sent).",
        "",
        "**A bad line is skipped, not fatal**: it gets an error line in the output (`error.code` shown below;",
        "`response` is null, nothing was sent for it), the other lines run, and the run exits 1. `--strict`",
        "refuses the whole file instead. A message for a bad line is also printed on stderr, as",
        "`FILE:LINE: FIELD: reason`, except where marked *(output only)*.",
        "",
        "| # | input | exit | message (stderr) |",
        "| --- | --- | --- | --- |",
    ]
    for i, case in enumerate(CASES, 1):
        message = case.message.replace("\n", " ⏎ ").replace("|", "\\|")
        if case.line:
            message += f" … *(error line `{case.error_code}`{', output only' if case.in_output_only else ''})*"
        rows.append(f"| {i} | {case.what} | {case.exit} | `{message}` |")
    rows.append(f"| {len(CASES) + 1} | an existing output whose last line was torn by a crash | 0 (repaired) | "
                f"`out.jsonl: {REPAIR_MESSAGE} (N bytes) left by an interrupted run` |")
    rows.append(f"| {len(CASES) + 2} | a model the endpoint does not serve (a typo: `gpt-4o-mnii`) beside good lines "
                f"*(sent: the server answers 404; tests/test_stops.py)* | 1 (7 when no other model is left to run) | "
                f"`{TYPO_MESSAGE}` |")
    rows.append("")
    return "\n".join(rows)


def test_the_docs_table_is_the_case_list() -> None:
    assert DOC.read_text(encoding="utf-8") == render_table(), (
        "docs/bad-input.md is out of date: run .venv/bin/python tests/test_survival_input.py")


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_table(), encoding="utf-8")
    print(f"wrote {DOC} ({len(CASES) + 2} cases)")
