"""The `batchchat` command line: thin typer wiring over the engine and the simulator."""

# No `from __future__ import annotations` here: typer reads each command's annotations several times per
# invocation, and string annotations would be evaluated again each time (~8 ms of `batchchat --help`).

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from batchchat._lazy import import_deferring
from batchchat.errors import BatchchatError, ExitCode, UsageError
from batchchat.simulator.command import serve

# The engine, anyio, httpx and aiohttp are imported inside the commands, so that `--help` starts fast.

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # rich tracebacks show local variables, and so the API key
    help="Push a JSONL batch of chat-completion and embedding requests through an OpenAI-compatible API.",
)
app.command("serve")(serve)

SIMULATED_KEY = "sk-simulated-local-key"  # what --simulate's server expects; not a secret
_ENDPOINT = "Endpoint"
_LIMITS = "Limits and retries"
_DEFAULTS = "Defaults for short lines"
_OUTPUT = "Output and progress"
_SIM = "Built-in simulator"
_FLEET = "Fleet: one budget for many processes"
_BATCH = "Batch API (--via batch)"
_COST = "Cost"


def _default(text: str) -> str:
    """A default shown the way typer shows its own (`[default: ...]`), the bracket escaped for rich's markup."""
    return f" \\[default: {text}]"


def _flags_without_type() -> None:
    """Show boolean flags as flags: typer 0.29 gives them a `<bool>` type column, as if they took a value."""
    from typer.core import TyperOption

    typed = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else typed(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"batchchat {version('batchchat')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Push a JSONL batch of chat-completion and embedding requests through an OpenAI-compatible API."""


def _fail(error: BatchchatError) -> typer.Exit:
    typer.echo(f"batchchat: error: {error}", err=True)
    return typer.Exit(int(error.exit_code))


@app.command()
def run(
    input: Annotated[str, typer.Argument(help="JSONL file of requests, or - for standard input.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Results JSONL (required when INPUT is -); rerunning on the same output resumes. - streams the result lines to standard output (no resume there; the summary and logs go to standard error)." + _default("INPUT.results.jsonl beside the input"), rich_help_panel=_OUTPUT)] = None,  # noqa: E501
    base_url: Annotated[str | None, typer.Option(help='API base URL.' + _default('$OPENAI_BASE_URL, else https://api.openai.com/v1'), rich_help_panel=_ENDPOINT)] = None,  # noqa: E501
    api_key_env: Annotated[str | None, typer.Option(help='Environment variable that holds the API key.' + _default('OPENAI_API_KEY'), rich_help_panel=_ENDPOINT)] = None,  # noqa: E501
    azure_api_version: Annotated[str | None, typer.Option(help="Azure OpenAI: send the key as `api-key` and add ?api-version=VERSION.", rich_help_panel=_ENDPOINT)] = None,  # noqa: E501
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="Extra request header 'Name: value' (repeatable).", rich_help_panel=_ENDPOINT)] = None,  # noqa: E501
    timeout: Annotated[float | None, typer.Option(help='Read timeout per attempt, seconds.' + _default('600'), rich_help_panel=_ENDPOINT)] = None,  # noqa: E501
    connect_timeout: Annotated[float | None, typer.Option(help='Connect timeout, seconds.' + _default('10'), rich_help_panel=_ENDPOINT)] = None,  # noqa: E501
    transport: Annotated[str | None, typer.Option(help="HTTP client: aiohttp (fast) or httpx (httpx's own transport)." + _default('aiohttp'), rich_help_panel=_ENDPOINT)] = None,  # noqa: E501
    rpm: Annotated[float | None, typer.Option(help='Requests per minute budget.' + _default('no limit'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    tpm: Annotated[float | None, typer.Option(help='Tokens per minute budget, charged prompt + max_tokens x n up front.' + _default('no limit'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    model_limit: Annotated[list[str] | None, typer.Option("--model-limit", help="Limits of one model, MODEL=RPM,TPM (either may be empty), in place of --rpm/--tpm for it (repeatable).", rich_help_panel=_LIMITS)] = None,  # noqa: E501
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", help='Most requests in flight at once.' + _default('64'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    max_attempts: Annotated[int | None, typer.Option(help='Attempts per request, the first included.' + _default('5'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    deadline: Annotated[float | None, typer.Option(help='Seconds one request may take over all its attempts.' + _default('900'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    backoff_base: Annotated[float | None, typer.Option(help='First retry backoff, seconds; doubles per retry, with jitter.' + _default('0.5'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    backoff_max: Annotated[float | None, typer.Option(help='Longest backoff, seconds.' + _default('8'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    max_wait: Annotated[float | None, typer.Option(help="Cap on any one wait between attempts, a server's Retry-After included." + _default('60'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    adapt: Annotated[str | None, typer.Option(help="auto: with no --rpm/--tpm, learn the limits from the server's x-ratelimit headers, and adapt the requests in flight (up to --concurrency) to a server that sends none; on: always adapt concurrency; off: exactly the limits given." + _default('auto'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    grace: Annotated[float | None, typer.Option(help='After Ctrl-C/SIGTERM or a rejected key, seconds in-flight requests get to finish.' + _default('30'), rich_help_panel=_LIMITS)] = None,  # noqa: E501
    model: Annotated[str | None, typer.Option(help="Model for lines that name none.", rich_help_panel=_DEFAULTS)] = None,  # noqa: E501
    system: Annotated[str | None, typer.Option(help="System message for {\"prompt\": ...} lines.", rich_help_panel=_DEFAULTS)] = None,  # noqa: E501
    max_tokens: Annotated[int | None, typer.Option(help="max_tokens for lines that set none.", rich_help_panel=_DEFAULTS)] = None,  # noqa: E501
    temperature: Annotated[float | None, typer.Option(help="temperature for lines that set none.", rich_help_panel=_DEFAULTS)] = None,  # noqa: E501
    endpoint: Annotated[str | None, typer.Option(help='Endpoint for bare bodies, e.g. /v1/responses.' + _default('inferred: messages/prompt -> chat, input -> embeddings'), rich_help_panel=_DEFAULTS)] = None,  # noqa: E501
    limit: Annotated[int | None, typer.Option(help="A trial run: send only the first N lines with work to do; the others are left for a later run (the summary counts them). Exit 0 if those N all succeed.", rich_help_panel=_LIMITS)] = None,  # noqa: E501
    resend_changed: Annotated[bool, typer.Option("--resend-changed", help="On resume, send again the lines whose request (endpoint and body after defaults) changed since they were answered; their old answers are replaced. Without it such a rerun is refused (exit 2).", rich_help_panel=_OUTPUT)] = False,  # noqa: E501
    strict: Annotated[bool, typer.Option("--strict", help="Refuse the whole file (exit 2) if any line is invalid, instead of writing an error line for it.", rich_help_panel=_OUTPUT)] = False,  # noqa: E501
    progress: Annotated[str | None, typer.Option(help='auto (a bar on a terminal, log lines otherwise), bar, log or off.' + _default('auto'), rich_help_panel=_OUTPUT)] = None,  # noqa: E501
    log_interval: Annotated[float | None, typer.Option(help='Seconds between progress log lines when not on a terminal.' + _default('10'), rich_help_panel=_OUTPUT)] = None,  # noqa: E501
    summary_json: Annotated[Path | None, typer.Option(help="Also write the summary as JSON here.", rich_help_panel=_OUTPUT)] = None,  # noqa: E501
    max_cost: Annotated[str | None, typer.Option(help="Spending cap in USD: no request is sent whose worst case could pass it; then in-flight requests finish and the run exits 5 (a rerun with a higher cap resumes).", rich_help_panel=_COST)] = None,  # noqa: E501
    prices: Annotated[Path | None, typer.Option(help="Price file (TOML or JSON, USD per 1M tokens) adding or overriding models of the shipped table.", rich_help_panel=_COST)] = None,  # noqa: E501
    config: Annotated[Path | None, typer.Option(help="TOML file of defaults for these flags (keys as flag names: rpm, base-url, ...).", rich_help_panel=_OUTPUT)] = None,  # noqa: E501
    shared: Annotated[str | None, typer.Option(help="Share every budget with the other processes and hosts on this key through Redis: redis://HOST:PORT/DB." + _default('env BATCHCHAT_SHARED'), rich_help_panel=_FLEET)] = None,  # noqa: E501
    shared_timeout: Annotated[float | None, typer.Option(help="Seconds without Redis (dispatch paused, reconnecting) before the run stops with exit 8." + _default('60'), rich_help_panel=_FLEET)] = None,  # noqa: E501
    shared_fallback: Annotated[str | None, typer.Option(help="When Redis stays lost: stop (exit 8), or local: go on with local budgets (the fleet may then exceed the limit)." + _default('stop'), rich_help_panel=_FLEET)] = None,  # noqa: E501
    cap_name: Annotated[str | None, typer.Option(help="With --max-cost and --shared: the name of the spending cap the fleet's processes share (one cap per name, key and endpoint, kept a day after its last use)." + _default('the input file: its name, size and first MiB'), rich_help_panel=_FLEET)] = None,  # noqa: E501
    shard: Annotated[str | None, typer.Option(help="K/N: run only the lines whose line number (from 0) modulo N is K; the default output gains .shardK-of-N. Join the outputs with `batchchat merge`.", rich_help_panel=_FLEET)] = None,  # noqa: E501
    simulate: Annotated[bool, typer.Option("--simulate", help="Run against the built-in simulator on a free loopback port instead of a real API.", rich_help_panel=_SIM)] = False,  # noqa: E501
    sim_rpm: Annotated[int | None, typer.Option(help="Simulator's requests/min limit." + _default('none'), rich_help_panel=_SIM)] = None,  # noqa: E501
    sim_tpm: Annotated[int | None, typer.Option(help="Simulator's tokens/min limit." + _default('none'), rich_help_panel=_SIM)] = None,  # noqa: E501
    sim_latency_ms: Annotated[float, typer.Option(help="Simulator's time to first token, ms.", rich_help_panel=_SIM)] = 20.0,  # noqa: E501
    sim_ms_per_token: Annotated[float, typer.Option(help="Simulator's time per completion token, ms.", rich_help_panel=_SIM)] = 0.5,  # noqa: E501
    sim_fault: Annotated[list[str] | None, typer.Option(help="Simulator fault KIND=RATE, e.g. 500=0.05 (repeatable).", rich_help_panel=_SIM)] = None,  # noqa: E501
    sim_models: Annotated[str | None, typer.Option(help="Models the simulator serves, comma-separated, or '*' for any name (a self-hosted model); others get 404 model_not_found." + _default('current OpenAI models'), rich_help_panel=_SIM)] = None,  # noqa: E501
    via: Annotated[str | None, typer.Option(help="online: real-time requests within the rate limits; batch: the provider's Batch API, half the price, results within 24 h." + _default('online'), rich_help_panel=_BATCH)] = None,  # noqa: E501
    batch_max_requests: Annotated[int | None, typer.Option(help="Most requests per batch file." + _default('50000'), rich_help_panel=_BATCH)] = None,  # noqa: E501
    batch_max_bytes: Annotated[int | None, typer.Option(help="Most bytes per batch file." + _default('200000000'), rich_help_panel=_BATCH)] = None,  # noqa: E501
    poll_interval: Annotated[float | None, typer.Option(help="First wait between polls of the batches, seconds; grows while nothing changes, up to 5 min." + _default('30'), rich_help_panel=_BATCH)] = None,  # noqa: E501
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Submit the batches and exit 0; the same command later collects.", rich_help_panel=_BATCH)] = False,  # noqa: E501
    fallback: Annotated[str | None, typer.Option(help="Unfinished lines of an expired or cancelled batch: resubmit (a new batch) or online (the online path)." + _default('resubmit'), rich_help_panel=_BATCH)] = None,  # noqa: E501
) -> None:
    """Send every request in INPUT and stream each result, with its usage, to the output as it finishes."""
    from batchchat import api
    from batchchat.online.collector import collector_paused

    options: dict[str, Any] = {
        "input": input, "output": output, "base_url": base_url, "api_key_env": api_key_env,
        "azure_api_version": azure_api_version, "header": header, "timeout": timeout,
        "connect_timeout": connect_timeout, "transport": transport, "rpm": rpm, "tpm": tpm,
        "model_limit": model_limit, "concurrency": concurrency, "max_attempts": max_attempts, "deadline": deadline,
        "backoff_base": backoff_base, "backoff_max": backoff_max, "max_wait": max_wait, "adapt": adapt,
        "grace": grace, "model": model, "system": system, "max_tokens": max_tokens, "temperature": temperature,
        "endpoint": endpoint, "strict": strict or None, "progress": progress, "log_interval": log_interval,
        "summary_json": summary_json, "handle_signals": True, "max_cost": max_cost, "prices": prices,
        "via": via, "batch_max_requests": batch_max_requests, "batch_max_bytes": batch_max_bytes,
        "poll_interval": poll_interval, "no_wait": no_wait or None, "fallback": fallback,
        "limit": limit, "resend_changed": resend_changed or None,
        "shared": shared, "shared_timeout": shared_timeout,
        "shared_fallback": shared_fallback, "cap_name": cap_name, "shard": shard,
    }
    with ExitStack() as stack:
        try:
            if simulate:
                sim = stack.enter_context(_start_simulator(sim_rpm, sim_tpm, sim_latency_ms, sim_ms_per_token,
                                                           sim_fault or [], sim_models))
                if poll_interval is None:
                    options["poll_interval"] = 0.25  # the simulator's batch window plays in seconds
                options["base_url"] = sim.base_url
                options["api_key"] = SIMULATED_KEY
                typer.echo(f"batchchat: simulator listening on {sim.base_url}", err=True)
            settings = api.build_settings(options, config_file=config)
            with collector_paused():  # the CLI owns this process; a library caller's is never touched
                summary = api.run(settings)
        except BatchchatError as error:
            raise _fail(error) from None
        except KeyboardInterrupt:
            typer.echo("batchchat: interrupted before the run started; nothing was sent", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    typer.echo(summary.render(), err=settings.output_path() == Path("-"))  # -o -: stdout holds the results
    raise typer.Exit(summary.exit_code)


@app.command()
def cancel(
    output: Annotated[Path, typer.Argument(help="The output of a `run --via batch` (its state is OUTPUT.batch.json).")],
    base_url: Annotated[str | None, typer.Option(help="API base URL." + _default("$OPENAI_BASE_URL, else https://api.openai.com/v1"))] = None,  # noqa: E501
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable that holds the API key." + _default("OPENAI_API_KEY"))] = None,  # noqa: E501
    poll_interval: Annotated[float | None, typer.Option(help="First wait between polls, seconds." + _default("30"))] = None,  # noqa: E501
    progress: Annotated[str | None, typer.Option(help="auto, bar, log or off." + _default("auto"))] = None,
) -> None:
    """Cancel the open batches of a `run --via batch` and collect what they finished (a rerun retries the rest)."""
    import anyio

    from batchchat import api

    options: dict[str, Any] = {"input": "-", "output": output, "base_url": base_url, "api_key_env": api_key_env,
                               "poll_interval": poll_interval, "progress": progress, "via": "batch",
                               "handle_signals": True}
    try:
        settings = api.build_settings(options)
        summary = anyio.run(lambda: api.abatch(settings, cancel=True), backend_options=api.backend_options())
    except BatchchatError as error:
        raise _fail(error) from None
    typer.echo(summary.render())
    raise typer.Exit(summary.exit_code)


@app.command()
def validate(
    input: Annotated[str, typer.Argument(help="JSONL file of requests, or - for standard input.")],
    model: Annotated[str | None, typer.Option(help="Model for lines that name none.")] = None,
    system: Annotated[str | None, typer.Option(help="System message for {\"prompt\": ...} lines.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="max_tokens for lines that set none.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Endpoint for bare bodies.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="An earlier output of this job, to learn how much of max_tokens answers use [INPUT.results.jsonl].")] = None,  # noqa: E501
    prices: Annotated[Path | None, typer.Option(help="Price file (TOML or JSON) adding or overriding models of the shipped table.")] = None,  # noqa: E501
    tpm: Annotated[float | None, typer.Option(help="Flag the requests larger than this tokens-per-minute budget (a run with it would refuse them).")] = None,  # noqa: E501
) -> None:
    """Check INPUT without sending anything: every bad line (file:line: field: reason), the token estimate and
    what the job will cost, per model, online and via the Batch API."""
    from batchchat import api
    from batchchat.cli.checks import check_assumptions
    from batchchat.config.load import build_settings
    from batchchat.input.plan import describe_invalid, open_input, scan

    options = {"input": input, "model": model, "system": system, "max_tokens": max_tokens, "endpoint": endpoint,
               "tpm": tpm}
    try:
        settings = build_settings(options, environ={})
        with ExitStack() as stack:
            path, display = open_input(settings.input, stack)
            plan = scan(path, display, settings, set(), set())
            found = check_assumptions(path, display, settings.defaults, settings.tpm)
        cost = None
        if input != "-":  # standard input cannot be read twice
            cost = api.estimate(input, output, prices=prices, model=model, system=system, max_tokens=max_tokens,
                                endpoint=endpoint)
    except BatchchatError as error:
        raise _fail(error) from None
    if plan.invalid_count:
        typer.echo(describe_invalid(plan), err=True)
    for note in found.describe(settings.tpm):
        typer.echo(note, err=True)
    typer.echo(f"{display}: {plan.valid:,} valid requests, {plan.invalid_count:,} invalid lines, "
               f"about {plan.estimated_tokens:,} tokens charged up front (prompt estimate + max_tokens x n)")
    if cost is not None and cost.models:
        typer.echo(cost.render())
    raise typer.Exit(int(ExitCode.USAGE) if plan.invalid_count or found.too_large_count else 0)


@app.command()
def tune(
    sample: Annotated[str, typer.Argument(help="JSONL file of requests; its first --sample-size valid lines are cycled.")],  # noqa: E501
    base_url: Annotated[str | None, typer.Option(help='API base URL.' + _default('$OPENAI_BASE_URL, else https://api.openai.com/v1'))] = None,  # noqa: E501
    api_key_env: Annotated[str | None, typer.Option(help='Environment variable that holds the API key.' + _default('OPENAI_API_KEY'))] = None,  # noqa: E501
    azure_api_version: Annotated[str | None, typer.Option(help="Azure OpenAI api-version.")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="Extra request header (repeatable).")] = None,  # noqa: E501
    model: Annotated[str | None, typer.Option(help="Model for lines that name none.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="max_tokens for lines that set none.")] = None,
    rpm: Annotated[float | None, typer.Option(help="Keep to this requests/min budget while sweeping.")] = None,
    tpm: Annotated[float | None, typer.Option(help="Keep to this tokens/min budget while sweeping.")] = None,
    timeout: Annotated[float | None, typer.Option(help='Read timeout per request, seconds.' + _default('600'))] = None,
    levels: Annotated[str, typer.Option(help="Concurrency levels to try, comma-separated.")] = "1,2,4,8,16,32,64,128,256",  # noqa: E501
    per_step: Annotated[int, typer.Option(help="Requests per level (at least 4 x the level).")] = 200,
    sample_size: Annotated[int, typer.Option(help="Lines of SAMPLE to use.")] = 100,
    pause: Annotated[float, typer.Option(help="Seconds between levels, so one level's load does not spill into the next.")] = 1.0,  # noqa: E501
    plot_path: Annotated[Path, typer.Option("--plot", help="Where to write the PNG plot.")] = Path("tune.png"),
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the sweep as JSON here.")] = None,
) -> None:
    """Sweep concurrency against an endpoint with a sample of your job; print a table, a plot and the flags to use."""
    import anyio

    from batchchat.api import backend_options
    from batchchat.config.load import build_settings
    from batchchat.input.plan import open_input
    from batchchat.tune import load_sample, plot, recommend, render_table, render_verdicts, steps_json, sweep

    try:
        level_list = tuple(int(x) for x in levels.split(",") if x.strip())
        if not level_list or min(level_list) < 1:
            raise ValueError
    except ValueError:
        error = UsageError(f"--levels must be positive whole numbers separated by commas, got {levels!r}")
        raise _fail(error) from None
    options = {"input": sample, "base_url": base_url, "api_key_env": api_key_env, "header": header,
               "azure_api_version": azure_api_version, "model": model, "max_tokens": max_tokens, "rpm": rpm,
               "tpm": tpm, "timeout": timeout}
    try:
        settings = build_settings(options)
        with ExitStack() as stack:
            path, _display = open_input(settings.input, stack)
            jobs = load_sample(path, settings, sample_size)

        def report(step: Any) -> None:
            typer.echo(f"batchchat tune: {step.concurrency} in flight: {step.succeeded_per_second:,.1f} succeeded/s "
                       f"({step.failed_per_second:,.1f} errors/s), "
                       f"p95 {step.latency_ms_p95:,.0f} ms, {100 * step.error_rate:.1f}% errors", err=True)

        steps, headers_seen, limits = anyio.run(
            lambda: sweep(settings, jobs, level_list, per_step, pause, report), backend_options=backend_options())
    except BatchchatError as error:
        raise _fail(error) from None
    advice = recommend(steps, headers_seen, limits)
    typer.echo(render_table(steps))
    if plot(steps, plot_path, advice):
        typer.echo(f"plot: {plot_path}")
    else:
        typer.echo("plot skipped: matplotlib is not installed (pip install 'batchchat[plot]')")
    if json_path is not None:
        json_path.write_bytes(steps_json(steps, advice, limits))
    typer.echo(render_verdicts(advice))
    typer.echo(f"recommended: {advice.flags()}  ({advice.reason})")


@app.command()
def merge(
    out: Annotated[Path, typer.Argument(help="The merged output (written beside, then renamed over: crash-safe).")],
    sources: Annotated[list[Path], typer.Argument(help="Result files to join: the outputs of a job's shards.")],
) -> None:
    """Join shard outputs into OUT, one line per id (a success wins over an error; among equals the last)."""
    from batchchat.output.merge import merge as merge_outputs

    try:
        report = merge_outputs(out, sources)
    except BatchchatError as error:
        raise _fail(error) from None
    typer.echo(report.render())


@app.command()
def status(
    output: Annotated[Path | None, typer.Argument(help="The output of a run (its state file OUTPUT.status.json sits beside it).")] = None,  # noqa: E501
    shared: Annotated[str | None, typer.Option(help="Redis URL of the fleet's budgets: list the processes drawing on each [env BATCHCHAT_SHARED].")] = None,  # noqa: E501
    model: Annotated[list[str] | None, typer.Option(help="With --shared: name the budget of this model (for the key and --base-url given); repeatable.")] = None,  # noqa: E501
    base_url: Annotated[str | None, typer.Option(help="With --shared: API base URL the fleet uses [env OPENAI_BASE_URL].")] = None,  # noqa: E501
    api_key_env: Annotated[str | None, typer.Option(help="With --shared: environment variable that holds the API key [OPENAI_API_KEY].")] = None,  # noqa: E501
    cap_name: Annotated[list[str] | None, typer.Option(help="With --shared: name the spending cap of this name (a run's --cap-name, or its input's default name shown in its summary); repeatable.")] = None,  # noqa: E501
) -> None:
    """How far the job writing OUTPUT is (done/total, failures, whether a run holds the lock); with --shared, the
    fleet on a shared budget store: each budget's live processes and what each spent in the last minute."""
    import os

    if output is None and (shared or os.environ.get("BATCHCHAT_SHARED")):
        from batchchat import api

        try:
            report = api.shared_status(shared, models=model or (), base_url=base_url, api_key_env=api_key_env,
                                       cap_names=cap_name or ())
        except BatchchatError as error:
            raise _fail(error) from None
        typer.echo(report)
        return
    if output is None:
        raise _fail(UsageError("status needs an OUTPUT, or --shared URL for the fleet"))
    from batchchat.report.status import describe_status

    text, found = describe_status(output)
    typer.echo(text)
    raise typer.Exit(0 if found else int(ExitCode.USAGE))


def _start_simulator(rpm: int | None, tpm: int | None, latency_ms: float, ms_per_token: float,
                     faults: list[str], models: str | None = None) -> Any:
    from batchchat.simulator import Simulator, SimulatorConfig
    from batchchat.simulator.models import DEFAULT_MODELS

    rates: dict[str, float] = {}
    for fault in faults:
        kind, sep, rate = fault.partition("=")
        try:
            rates[kind] = float(rate)
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(f"--sim-fault must look like KIND=RATE, got {fault!r}")
    from batchchat.simulator.batch_config import BatchConfig

    # the Batch API on a short time scale: the "24h" window is 10 minutes, a batch file runs in seconds
    batch = BatchConfig(window_seconds=600.0, validate_seconds=0.5, lines_per_second=5000.0, finalize_seconds=0.5)
    served = DEFAULT_MODELS if models is None else tuple(m.strip() for m in models.split(",") if m.strip())
    if not served:
        raise typer.BadParameter(f"--sim-models must name at least one model, or '*' for any, got {models!r}")
    config = SimulatorConfig(rpm=rpm, tpm=tpm, latency_ms=latency_ms, ms_per_token=ms_per_token, jitter=0.2,
                             fault_rates=rates, api_key=SIMULATED_KEY, batch=batch, models=served)
    return Simulator.in_subprocess(config)


def main() -> None:
    """Entry point of the `batchchat` script."""
    if not sys.argv[1:] or "--help" in sys.argv:
        _import_help_renderer()
    elif (sys.argv[1] == "serve" or "--simulate" in sys.argv) and not _simulator_installed():
        typer.echo("batchchat: error: the simulator needs its extra: pip install 'batchchat[simulator]'", err=True)
        sys.exit(int(ExitCode.USAGE))
    app(prog_name="batchchat")


def _simulator_installed() -> bool:
    """Whether the simulator's server-only dependency (httptools) can be imported."""
    import importlib.util

    try:
        return importlib.util.find_spec("httptools") is not None
    except ValueError:  # sys.modules["httptools"] is None: hidden on purpose
        return False


def _import_help_renderer() -> None:
    """Import typer's rich help renderer without rich.markdown and rich.traceback (half its import time).

    The help uses neither: its markup is rich's, not Markdown, and pretty tracebacks are off. Typer gets
    stand-ins for the two classes it takes from them, which import the real ones if ever used.
    """
    import_deferring("typer.rich_utils", {"rich.markdown": ("Markdown",), "rich.traceback": ("Traceback",)})


if __name__ == "__main__":
    sys.exit(main())
