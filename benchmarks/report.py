"""RESULTS.md and RESULTS.json: write a fresh report, or merge a partial run (`run_all --only`) into the last one.

A report is a head (title, "Mode:" line, machine table), a "## Goals" table with rows
`| section title | goal | measured | verdict |`, then one `## ` section per benchmark; `run_all` puts a
`<!-- bench: NAME -->` line under each heading it writes (sections merged by hand may have none).

A newly run section replaces the old section matched by the first of these rules that matches any:
1. the old section's marker names the same benchmark;
2. the same title;
3. the same title once a leading number ("9. ") is dropped from both, so renumbering a section still matches.
A number alone never matches: two benchmarks have carried the same number before ("8. Batch API", "8. Pacing").
A replaced section keeps its place; every other section keeps its text byte for byte and its place; sections
matching none go last. The Goals table is rebuilt in the sections' order: a rerun's rows from its new goals, a kept
section's rows from the old table (or, when the old table has none, from the goal table in its own text).
The "Mode:" line keeps what it said and gains "Rerun since, with --only: NAME (mode, date, seconds, CPU); ...",
one entry per benchmark (its latest rerun); the machine table stays the first run's. RESULTS.json gets the same
merge of "sections" (keyed by title), and "reruns" (benchmark -> mode, seconds, machine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from benchmarks.common import Section, table, verdict

GOALS_HEADING = "## Goals"
GOALS_COLUMNS = ["benchmark", "goal", "measured", "verdict"]
MARKER = re.compile(r"^<!-- bench: (\S+) -->$", re.M)
NUMBER = re.compile(r"^\d+\.\s+")
RERUNS = " Rerun since, with --only: "


@dataclass
class Part:
    """One `## ` section of a report: its title, its text verbatim (heading line included), its benchmark."""

    title: str
    text: str
    bench: str | None = None


def section_part(bench: str, section: Section) -> Part:
    """A newly run section as report text, marked with the benchmark that wrote it."""
    heading, rest = section.markdown().split("\n", 1)
    return Part(section.title, f"{heading}\n<!-- bench: {bench} -->\n{rest}\n", bench)


def goal_rows(parts: list[Part], sections: dict[str, Section]) -> list[list[str]]:
    """Goals-table rows of fresh sections (by title), in the parts' order."""
    return [[p.title, g, v, verdict(ok)] for p in parts for g, v, ok in sections[p.title].goals]


def render(head: str, rows: list[list[str]], parts: list[Part]) -> str:
    goals = f"{GOALS_HEADING}\n\n{table(GOALS_COLUMNS, rows)}\n\n"
    return head + goals + "".join(p.text if p.text.endswith("\n") else p.text + "\n" for p in parts)


def _table_rows(text: str, header: list[str]) -> list[list[str]]:
    """Body rows of the markdown tables in `text` whose header is `header`."""
    def rule(line: str) -> bool:
        return line.startswith("|") and set(line) <= set("|-: ")

    rows: list[list[str]] = []
    inside = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith("| ") and line.endswith(" |")):
            inside = False
        elif i + 1 < len(lines) and rule(lines[i + 1]):
            inside = line[2:-2].split(" | ") == header
        elif inside and not rule(line):
            rows.append(line[2:-2].split(" | "))
    return rows


def parse(text: str) -> tuple[str, list[list[str]], list[Part]]:
    """Split a report into its head, its Goals-table rows and its sections (``` fences are not looked into)."""
    chunks: list[list[str]] = [[]]
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("## ") and not fenced:
            chunks.append([])
        chunks[-1].append(line)
    head, rows, parts = "".join(chunks[0]), [], []
    for chunk in chunks[1:]:
        body = "".join(chunk)
        title = chunk[0][3:].strip()
        if title == "Goals":
            rows = _table_rows(body, GOALS_COLUMNS)
        else:
            marker = MARKER.search(body)
            parts.append(Part(title, body, marker.group(1) if marker else None))
    return head, rows, parts


def _unnumbered(title: str) -> str:
    return NUMBER.sub("", title)


def _match(old: Part, bench: str, title: str) -> bool:
    return old.bench == bench or old.title == title or _unnumbered(old.title) == _unnumbered(title)


def _mode_line(head: str, note: dict[str, str]) -> str:
    """The head with `note` (benchmark -> "mode, date, seconds, CPU") recorded on its Mode line."""
    def update(m: re.Match[str]) -> str:
        base, _, done = m.group(0).partition(RERUNS)
        entries = {e.split(" (", 1)[0]: e for e in done.rstrip(".").split("; ") if e}
        entries.update({name: f"{name} ({text})" for name, text in note.items()})
        return base + RERUNS + "; ".join(entries.values()) + "."
    return re.sub(r"^Mode:.*$", update, head, count=1, flags=re.M)


def merge(old_text: str, new: list[tuple[str, Section]], note: dict[str, str]) -> tuple[str, dict[str, str]]:
    """`old_text` with the sections of `new` ((benchmark, section) pairs) put in; also new title -> old title."""
    head, old_rows, parts = parse(old_text)
    fresh = {s.title: s for _, s in new}
    replaced: dict[str, str] = {}
    merged: list[Part] = []
    for old in parts:
        hit = next(((b, s) for b, s in new if s.title not in replaced and _match(old, b, s.title)), None)
        if hit is None:
            merged.append(old)
        else:
            replaced[hit[1].title] = old.title
            merged.append(section_part(*hit))
    merged += [section_part(b, s) for b, s in new if s.title not in replaced]
    rows: list[list[str]] = []
    for p in merged:
        if p.title in fresh:
            rows += goal_rows([p], fresh)
        else:
            kept = [r for r in old_rows if r[0] == p.title]
            rows += kept or [[p.title, *r] for r in _table_rows(p.text, GOALS_COLUMNS[1:])]
    return render(_mode_line(head, note), rows, merged), replaced


def merge_json(old: dict[str, Any], new: dict[str, Any], replaced: dict[str, str]) -> dict[str, Any]:
    """RESULTS.json: `old` with `new`'s sections (replacing `replaced`'s old titles in place), timings and reruns."""
    gone = {old_title: title for title, old_title in replaced.items()}
    sections: dict[str, Any] = {}
    for title, data in old.get("sections", {}).items():
        if title in new["sections"] or title in gone:
            title = gone.get(title, title)
            sections[title] = new["sections"][title]
        else:
            sections[title] = data
    sections.update({t: d for t, d in new["sections"].items() if t not in sections})
    return {**new, **old, "sections": sections, "timings": {**old.get("timings", {}), **new["timings"]},
            "reruns": {**old.get("reruns", {}), **new.get("reruns", {})}}
