"""Configuration (#10): TOML values are type-checked and unknown keys named, in the file and in
`batchchat.run(**options)`; precedence flag > environment > file > default, asserted per kind of option.

Before the fix (a6c68e4, `batchchat/config.py`), the file's values went into `RunSettings` unchecked
(`rpm = "fast"` ended in a TypeError traceback at `settings.check()`: `'<=' not supported between str and
int`) and `load_config_file`/`run(**options)` dropped any key they did not know without a word, so each
`pytest.raises(UsageError, ...)` below would not have been raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_process import cli
from helpers import chat_lines, write_jobs

import batchchat
from batchchat.config.load import build_settings
from batchchat.errors import UsageError
from batchchat.simulator import Simulator


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batchchat.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("line", "words"), [
    ('rpm = "fast"', r"rpm: must be a number, got 'fast'"),
    ("concurrency = 2.5", r"concurrency: must be a whole number, got 2.5"),
    ("concurrency = true", r"concurrency: must be a whole number, got True"),
    ("strict = 1", r"strict: must be true or false, got 1"),
    ("model = 4", r"model: must be a string, got 4"),
    ("header = [1, 2]", r"header: must be a list of strings"),
    ("summary-json = 3", r"summary-json: must be a path"),
    ("limit = \"ten\"", r"limit: must be a whole number"),
    ("resend-changed = \"yes\"", r"resend-changed: must be true or false"),
])
def test_a_value_of_the_wrong_type_in_the_file_is_a_usage_error(tmp_path: Path, line: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        build_settings({"input": "in.jsonl"}, environ={}, config_file=config(tmp_path, line + "\n"))


def test_an_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"batchchat.toml: concurency: unknown option \(did you mean concurrency\?\)"):
        build_settings({"input": "in.jsonl"}, environ={}, config_file=config(tmp_path, "concurency = 3\n"))


def test_the_cli_says_so_in_one_line_exit_2(tmp_path: Path) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(1))
    done = cli("run", src, "--config", config(tmp_path, 'rpm = "fast"\n'))
    assert done.returncode == 2 and "rpm: must be a number, got 'fast'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_misspelt_library_option_is_an_error_that_names_it(tmp_path: Path, sim: Simulator) -> None:
    src = write_jobs(tmp_path / "in.jsonl", chat_lines(1))
    with pytest.raises(UsageError, match=r"option concurency: unknown option \(did you mean concurrency\?\)"):
        batchchat.run(src, base_url=sim.base_url, api_key="sk-x", progress="off", concurency=3)
    with pytest.raises(UsageError, match=r"option rpm: must be a number, got 'fast'"):
        batchchat.run(src, base_url=sim.base_url, api_key="sk-x", progress="off", rpm="fast")
    with pytest.raises(UsageError, match=r"unknown option"):
        batchchat.run(src, base_url=sim.base_url, api_key="sk-x", progress="off", max_token=5)
    assert sim.stats()["requests"] == 0


# -- precedence: flag > environment > file > default, per kind of option ---------------------------------

KINDS: list[tuple[str, str, Any, Any, Any, Any]] = [
    # option, file key, flag value, file value, file text, default
    ("rpm", "rpm", 100.0, 50.0, "rpm = 50", None),
    ("concurrency", "concurrency", 7, 3, "concurrency = 3", 64),
    ("model", "model", "gpt-4o-mini", "from-file", 'model = "from-file"', None),
    ("strict", "strict", True, True, "strict = true", False),
    ("summary_json", "summary-json", Path("flag.json"), Path("file.json"), 'summary-json = "file.json"', None),
    ("header", "header", ["X-A: flag"], ["X-A: file"], 'header = ["X-A: file"]', None),
]


def settings_value(settings: Any, option: str) -> Any:
    return {
        "rpm": settings.rpm, "concurrency": settings.concurrency, "model": settings.defaults.model,
        "strict": settings.strict, "summary_json": settings.summary_json,
        "header": [f"{k}: {v}" for k, v in settings.endpoint.extra_headers] or None,
    }[option]


@pytest.mark.parametrize(("option", "key", "flag", "file_value", "text", "default"), KINDS)
def test_flag_beats_file_beats_default(tmp_path: Path, option: str, key: str, flag: Any, file_value: Any,
                                      text: str, default: Any) -> None:
    path = config(tmp_path, text + "\n")
    assert settings_value(build_settings({"input": "x", option: flag}, environ={}, config_file=path), option) == flag
    assert settings_value(build_settings({"input": "x"}, environ={}, config_file=path), option) == file_value
    assert settings_value(build_settings({"input": "x"}, environ={}), option) == default


def test_base_url_and_key_flag_beat_environment_beat_file_beat_default(tmp_path: Path) -> None:
    path = config(tmp_path, 'base-url = "http://file/v1"\napi-key-env = "FILE_KEY"\n')
    env = {"OPENAI_BASE_URL": "http://env/v1", "FILE_KEY": "sk-file", "OPENAI_API_KEY": "sk-env"}

    def url(options: dict[str, Any], environ: dict[str, str], file: Path | None) -> str:
        return build_settings({"input": "x", **options}, environ=environ, config_file=file).endpoint.base_url

    assert url({"base_url": "http://flag/v1"}, env, path) == "http://flag/v1"
    assert url({}, env, path) == "http://env/v1"
    assert url({}, {}, path) == "http://file/v1"
    assert url({}, {}, None) == "https://api.openai.com/v1"
    # the key's variable: flag > file > default; the key itself comes from that variable
    key = build_settings({"input": "x", "api_key_env": "OPENAI_API_KEY"}, environ=env, config_file=path)
    assert key.endpoint.api_key is not None and key.endpoint.api_key.reveal() == "sk-env"
    key = build_settings({"input": "x"}, environ=env, config_file=path)
    assert key.endpoint.api_key_env == "FILE_KEY" and key.endpoint.api_key is not None
    assert key.endpoint.api_key.reveal() == "sk-file"
