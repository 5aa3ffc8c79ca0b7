"""benchmarks/report.py: `run_all --only` merges its sections into the last report instead of overwriting it."""

from __future__ import annotations

from benchmarks.common import Section
from benchmarks.report import merge, merge_json, parse

OLD = """# batchchat benchmarks

Mode: full (`make bench`); benchmarks: alpha, beta; total wall time 1.0 min (alpha 30 s, beta 30 s).

## Goals

| benchmark | goal | measured | verdict |
| --- | --- | --- | --- |
| 1. Alpha | fast | 5 | met |
| 2. Beta | small | 9 | **missed** |

## 1. Alpha

Alpha's text, by hand.
```
## not a heading: inside a fence
```

| goal | measured | verdict |
| --- | --- | --- |
| fast | 5 | met |

## 2. Beta
<!-- bench: beta -->

| goal | measured | verdict |
| --- | --- | --- |
| small | 9 | **missed** |

## Hand-merged gamma

| x | y |
| --- | --- |
| 1 | 2 |

| goal | measured | verdict |
| --- | --- | --- |
| right | 7 | met |
## 9. Delta

Old delta.
"""


def test_parse_splits_head_goals_and_sections() -> None:
    head, rows, parts = parse(OLD)
    assert head.startswith("# batchchat benchmarks") and head.endswith("\n\n") and "## " not in head
    assert rows == [["1. Alpha", "fast", "5", "met"], ["2. Beta", "small", "9", "**missed**"]]
    assert [p.title for p in parts] == ["1. Alpha", "2. Beta", "Hand-merged gamma", "9. Delta"]
    assert [p.bench for p in parts] == [None, "beta", None, None]
    assert "".join(p.text for p in parts) == OLD[OLD.index("## 1. Alpha"):]


def test_merge_replaces_by_marker_title_or_renumbered_title_and_keeps_the_rest() -> None:
    new = [
        ("beta", Section("2. Beta, renamed", "New beta.", [("small", "3", True)])),  # the marker matches
        ("delta", Section("10. Delta", "New delta.", [("d", "1", True)])),  # renumbered: 9. -> 10.
        ("epsilon", Section("11. Epsilon", "New.", [("e", "2", False)])),  # never seen: goes last
        ("omega", Section("1. Omega", "Not alpha.", [])),  # a number alone does not match
    ]
    text, replaced = merge(OLD, new, {"beta": "full, today, 3 s"})
    head, rows, parts = parse(text)
    assert [p.title for p in parts] == ["1. Alpha", "2. Beta, renamed", "Hand-merged gamma", "10. Delta",
                                        "11. Epsilon", "1. Omega"]
    assert [p.bench for p in parts] == [None, "beta", None, "delta", "epsilon", "omega"]
    old_parts = parse(OLD)[2]
    assert parts[0].text == old_parts[0].text and parts[2].text == old_parts[2].text  # kept byte for byte
    assert "New delta." in parts[3].text and "Old delta." not in text
    assert replaced == {"2. Beta, renamed": "2. Beta", "10. Delta": "9. Delta"}
    assert rows == [["1. Alpha", "fast", "5", "met"], ["2. Beta, renamed", "small", "3", "met"],
                    ["Hand-merged gamma", "right", "7", "met"],  # not in the old table: from its own goal table
                    ["10. Delta", "d", "1", "met"], ["11. Epsilon", "e", "2", "**missed**"]]
    mode = next(line for line in head.splitlines() if line.startswith("Mode:"))
    assert mode == ("Mode: full (`make bench`); benchmarks: alpha, beta; total wall time 1.0 min (alpha 30 s, beta "
                    "30 s). Rerun since, with --only: beta (full, today, 3 s).")
    again, _ = merge(text, new[:1], {"beta": "quick, tomorrow, 1 s", "delta": "full, tomorrow, 9 s"})
    assert "Rerun since, with --only: beta (quick, tomorrow, 1 s); delta (full, tomorrow, 9 s)." in again
    assert again.count("## 2. Beta, renamed") == 1


def test_merge_json_replaces_sections_in_place() -> None:
    old = {"mode": "full", "timings": {"alpha": 30, "beta": 30},
           "sections": {"1. Alpha": {"a": 1}, "2. Beta": {"b": 1}, "9. Delta": {"d": 1}}}
    new = {"mode": "quick", "timings": {"beta": 3}, "reruns": {"beta": "x"},
           "sections": {"2. Beta, renamed": {"b": 2}, "11. Epsilon": {"e": 1}}}
    merged = merge_json(old, new, {"2. Beta, renamed": "2. Beta"})
    assert list(merged["sections"].items()) == [("1. Alpha", {"a": 1}), ("2. Beta, renamed", {"b": 2}),
                                                ("9. Delta", {"d": 1}), ("11. Epsilon", {"e": 1})]
    assert merged["timings"] == {"alpha": 30, "beta": 3} and merged["mode"] == "full"
    assert merged["reruns"] == {"beta": "x"}
