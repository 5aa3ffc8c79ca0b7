"""The data team's commands: `export` (flat rows), `report` (a per-id account) and `cache stats|prune`."""

# No `from __future__ import annotations`: typer reads the annotations (see cli/commands.py).

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from batchchat.errors import BatchchatError, UsageError

cache_app = typer.Typer(no_args_is_help=True, help="The request cache (--cache): what it holds, and pruning it.")
_FORMAT = "Read INPUT as jsonl, csv, tsv or parquet [default: by its extension]."
_ID_COLUMN = "A table input's column of custom_ids, as the run was given [default: row-N]."
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _fail(error: BatchchatError) -> typer.Exit:
    typer.echo(f"batchchat: error: {error}", err=True)
    return typer.Exit(int(error.exit_code))


def _input_settings(spec: str, input_format: str | None, id_column: str | None) -> Any:
    from batchchat.config.load import build_settings

    return build_settings({"input": spec, "input_format": input_format, "id_column": id_column}, environ={})


def export(
    output: Annotated[Path, typer.Argument(help="The results JSONL of a run.")],
    dest: Annotated[Path, typer.Option("--output", "-o", help="Where to write: FILE.parquet, FILE.csv or FILE.jsonl.")],
    format: Annotated[str | None, typer.Option("--format", help="parquet, csv or jsonl [default: by -o's extension].")] = None,  # noqa: E501
    join: Annotated[str | None, typer.Option(help="The run's input: add its columns to each row, by id.")] = None,
    input_format: Annotated[str | None, typer.Option(help=_FORMAT)] = None,
    id_column: Annotated[str | None, typer.Option(help=_ID_COLUMN)] = None,
) -> None:
    """Write OUTPUT as one flat row per id: custom_id, status, content, tokens, cost, error, metadata columns."""
    from batchchat.results.export import export as export_rows
    from batchchat.results.inputs import input_columns

    try:
        joined = input_columns(_input_settings(join, input_format, id_column)) if join is not None else None
        report = export_rows(output, dest, format, joined)
    except BatchchatError as error:
        raise _fail(error) from None
    typer.echo(report.render())


def report(
    output: Annotated[Path, typer.Argument(help="The results JSONL of a run (or a Batch API output file).")],
    input: Annotated[str | None, typer.Option("--input", help="The run's input: also count ids missing from the output, and ids it holds that the input does not.")] = None,  # noqa: E501
    input_format: Annotated[str | None, typer.Option(help=_FORMAT)] = None,
    id_column: Annotated[str | None, typer.Option(help=_ID_COLUMN)] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the cost and latency distributions here.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the account as JSON here.")] = None,
) -> None:
    """A per-id account of OUTPUT: ok, failed by code, missing, unexpected, repeated, 4xx inside 200, tokens and
    cost by model and tier. Exit 0 all ok, 1 some failed, 9 ids of the input missing from the output."""
    import orjson

    from batchchat.results.inputs import input_ids
    from batchchat.results.reconcile import reconcile, replayable

    try:
        if not output.is_file():
            raise UsageError(f"report: output {output} does not exist or is not a file")
        ids = None
        if input is not None:
            settings = _input_settings(input, input_format, id_column)
            ids = replayable(lambda: input_ids(settings))
        result = reconcile(output, ids, input)
        if plot is not None:
            from batchchat.results.plot import plot_report

            plot_report(result, plot)
        if json_path is not None:
            json_path.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2))
    except BatchchatError as error:
        raise _fail(error) from None
    typer.echo(result.render())
    if plot is not None:
        typer.echo(f"plot: {plot}")
    raise typer.Exit(result.exit_code)


def parse_age(text: str) -> float:
    """`30d`, `12h`, `90m`, `45s`, `2w` (or plain seconds) as seconds; anything else raises `UsageError`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise UsageError(f"--older-than must look like 30d, 12h, 90m or 45s, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@cache_app.command("stats")
def cache_stats(path: Annotated[Path, typer.Argument(help="The cache file (--cache PATH).")]) -> None:
    """How many answers the cache holds, how large it is, its oldest and newest, per model."""
    from batchchat.cache.store import RequestCache

    try:
        with RequestCache(path, create=False) as cache:
            typer.echo(cache.stats().render())
    except BatchchatError as error:
        raise _fail(error) from None


@cache_app.command("prune")
def cache_prune(
    path: Annotated[Path, typer.Argument(help="The cache file (--cache PATH).")],
    older_than: Annotated[str, typer.Option(help="Remove answers stored longer ago than this: 30d, 12h, 90m, 45s.")],
) -> None:
    """Remove the answers stored longer ago than --older-than, and give their space back to the disk."""
    from batchchat.cache.store import RequestCache

    try:
        age = parse_age(older_than)
        with RequestCache(path, create=False) as cache:
            removed = cache.prune(age)
            stats = cache.stats()
    except BatchchatError as error:
        raise _fail(error) from None
    typer.echo(f"{path}: removed {removed:,} answers stored more than {older_than} ago; "
               f"{stats.entries:,} left, {stats.file_bytes / 1e6:,.1f} MB")
