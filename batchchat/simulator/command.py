"""`batchchat serve`: run the OpenAI-compatible simulator from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from batchchat.simulator.config import RETRY_AFTER_STYLES, SimulatorConfig
from batchchat.simulator.faults import FAULT_KINDS
from batchchat.simulator.limits import LIMIT_KINDS
from batchchat.simulator.models import DEFAULT_MODELS

__all__ = ["parse_faults", "parse_model_limits", "serve"]


def parse_faults(specs: list[str]) -> dict[str, float]:
    """`["500=0.05", "drop=0.01"]` -> `{"500": 0.05, "drop": 0.01}`."""
    rates: dict[str, float] = {}
    for spec in specs:
        kind, sep, rate = spec.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KIND=RATE, got {spec!r}", param_hint="--fault")
        try:
            rates[kind.strip()] = float(rate)
        except ValueError:
            raise typer.BadParameter(f"rate must be a number in {spec!r}", param_hint="--fault") from None
    return rates


def parse_model_limits(specs: list[str]) -> dict[str, tuple[int | None, int | None]]:
    """`["gpt-4o=500,30000", "o3=,20000"]` -> `{"gpt-4o": (500, 30000), "o3": (None, 20000)}` (empty = no limit)."""
    limits: dict[str, tuple[int | None, int | None]] = {}
    for spec in specs:
        model, sep, numbers = spec.rpartition("=")
        rpm, _, tpm = numbers.partition(",")
        try:
            if not sep or not model.strip():
                raise ValueError
            limits[model.strip()] = (int(rpm) if rpm.strip() else None, int(tpm) if tpm.strip() else None)
        except ValueError:
            raise typer.BadParameter(f"expected MODEL=RPM,TPM, got {spec!r}", param_hint="--model-limit") from None
    return limits


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 = a free port).")] = 8000,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute per API key (default: no limit).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute per API key (default: no limit).")] = None,
    limit_window: Annotated[
        float, typer.Option(help="Seconds of the per-minute limits a burst may use (OpenAI: ~1 s).")
    ] = 1.0,
    rate_limit_headers: Annotated[
        bool,
        typer.Option("--rate-limit-headers/--no-rate-limit-headers", help="Send x-ratelimit-* headers."),
    ] = True,
    model_limit: Annotated[
        list[str] | None,
        typer.Option(
            help="MODEL=RPM,TPM, repeatable: that model's own limits (either may be empty: no limit); "
            "--rpm/--tpm apply to every other model."
        ),
    ] = None,
    limit_kind: Annotated[
        str,
        typer.Option(
            help=f"How limits are enforced: {', '.join(LIMIT_KINDS)} (OpenAI-like token bucket; a second's worth "
            "per whole second; a calendar-minute counter like LiteLLM's, no reset header)."
        ),
    ] = "bucket",
    retry_after_style: Annotated[
        str,
        typer.Option(
            help=f"Retry headers of 429s: {', '.join(RETRY_AFTER_STYLES)} (retry-after + retry-after-ms; "
            "llm_provider-retry-after: seconds to the minute's end; none)."
        ),
    ] = "openai",
    request_id_header: Annotated[
        str, typer.Option(help="Header carrying the request id (e.g. x-litellm-call-id).")
    ] = "x-request-id",
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated model names served (others get 404 model_not_found); '*' = any name. "
            "Default: current OpenAI models, plus those of --model-limit."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Serve at most this many requests at once; the others wait in FIFO order (default: all)."),
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="Require this key (Bearer or api-key header); else 401.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for answer lengths, latency jitter and faults.")] = 0,
    latency_ms: Annotated[float, typer.Option(help="Time to first token, in ms.")] = 0.0,
    latency_max_ms: Annotated[
        float | None, typer.Option(help="If set, time to first token is uniform in [latency-ms, this].")
    ] = None,
    ms_per_token: Annotated[float, typer.Option(help="Extra ms per completion token.")] = 0.0,
    jitter: Annotated[float, typer.Option(help="Latency jitter as a fraction (0.1 = ±10%).")] = 0.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(help=f"KIND=RATE, repeatable. Kinds: {', '.join(FAULT_KINDS)}."),
    ] = None,
    fault_sequence: Annotated[
        str | None,
        typer.Option(help="Comma-separated faults for the first requests, 'ok' = none (e.g. 500,ok,drop)."),
    ] = None,
    capacity: Annotated[
        int | None, typer.Option(help="Served at normal latency; beyond, latency x in_flight/capacity.")
    ] = None,
    overload_at: Annotated[int | None, typer.Option(help="503 at once above this many in flight.")] = None,
    default_max_tokens: Annotated[
        int, typer.Option(help="Token cap charged and applied when a request sets no max_tokens.")
    ] = 256,
    answer_tokens: Annotated[int, typer.Option(help="Natural answer lengths are 1..this many tokens.")] = 64,
    embedding_dims: Annotated[int, typer.Option(help="Dimensions of the simulated embeddings.")] = 8,
) -> None:
    """Run the OpenAI-compatible simulator (rate limits, latency, faults) until Ctrl-C."""
    from batchchat.simulator.runner import serve_forever

    sequence = tuple(s.strip() for s in fault_sequence.split(",") if s.strip()) if fault_sequence else ()
    served = tuple(m.strip() for m in models.split(",") if m.strip()) if models is not None else DEFAULT_MODELS
    try:
        config = SimulatorConfig(
            rpm=rpm,
            tpm=tpm,
            limit_window=limit_window,
            rate_limit_headers=rate_limit_headers,
            model_limits=parse_model_limits(model_limit or []),
            limit_kind=limit_kind,
            retry_after_style=retry_after_style,
            request_id_header=request_id_header,
            models=served,
            workers=workers,
            api_key=api_key,
            seed=seed,
            latency_ms=latency_ms,
            latency_max_ms=latency_max_ms,
            ms_per_token=ms_per_token,
            jitter=jitter,
            fault_rates=parse_faults(fault or []),
            fault_sequence=sequence,
            capacity=capacity,
            overload_at=overload_at,
            host=host,
            port=port,
            default_max_tokens=default_max_tokens,
            answer_tokens=answer_tokens,
            embedding_dims=embedding_dims,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        serve_forever(config)
    except OSError as exc:
        typer.echo(f"batchchat serve: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
