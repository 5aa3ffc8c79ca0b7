"""`batchchat serve`: run the OpenAI-compatible simulator from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from batchchat.simulator.config import RETRY_AFTER_STYLES, SimulatorConfig
from batchchat.simulator.faults import FAULT_KINDS
from batchchat.simulator.limits import HEADER_MODES, LIMIT_KINDS
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
    limit_headers: Annotated[
        str,
        typer.Option(
            help=f"What x-ratelimit-* headers describe: {', '.join(HEADER_MODES)} (OpenAI's shape: a per-minute "
            "bucket refilled continuously, while admission is per second; the admitting counter itself)."
        ),
    ] = "minute",
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
    # ---- the Batch API (/v1/files, /v1/batches): BatchConfig in batch_config.py ----
    batch_window_seconds: Annotated[
        float, typer.Option(help="Batch API: seconds that stand for the 24h completion window.")
    ] = 60.0,
    batch_validate_seconds: Annotated[float, typer.Option(help="Batch API: seconds a batch is validating.")] = 0.5,
    batch_lines_per_second: Annotated[
        float, typer.Option(help="Batch API: lines a batch completes per second.")
    ] = 1000.0,
    batch_finalize_seconds: Annotated[float, typer.Option(help="Batch API: seconds a batch is finalizing.")] = 0.5,
    batch_cancel_seconds: Annotated[float, typer.Option(help="Batch API: seconds a batch is cancelling.")] = 0.5,
    batch_failure_rate: Annotated[
        float, typer.Option(help="Batch API: fraction of lines that fail (500, in the error file).")
    ] = 0.0,
    batch_fail_all: Annotated[bool, typer.Option(help="Batch API: every line fails (an all-failed batch).")] = False,
    batch_enqueued_tokens: Annotated[
        int | None, typer.Option(help="Batch API: per-model limit of prompt tokens in open batches.")
    ] = None,
    batch_model_enqueued_tokens: Annotated[
        list[str] | None, typer.Option(help="Batch API: MODEL=TOKENS, the enqueued-token limit of one model.")
    ] = None,
    batch_max_requests: Annotated[int, typer.Option(help="Batch API: most lines per batch file.")] = 50_000,
    batch_max_file_bytes: Annotated[int, typer.Option(help="Batch API: largest batch file upload.")] = 200_000_000,
    batch_max_embedding_inputs: Annotated[
        int, typer.Option(help="Batch API: most embedding inputs per batch.")
    ] = 50_000,
    batch_upload_rpm: Annotated[
        int | None, typer.Option(help="Batch API: file uploads per minute (429 above).")
    ] = None,
    batch_create_rpm: Annotated[
        int | None, typer.Option(help="Batch API: batch creations per minute (429 above).")
    ] = None,
    batch_upload_faults: Annotated[
        str | None, typer.Option(help="Batch API: fate of the first uploads, e.g. ok,lost,500,drop.")
    ] = None,
    batch_create_faults: Annotated[
        str | None, typer.Option(help="Batch API: fate of the first creations ('lost': created, reply dropped).")
    ] = None,
    default_max_tokens: Annotated[
        int, typer.Option(help="Token cap charged and applied when a request sets no max_tokens.")
    ] = 256,
    answer_tokens: Annotated[int, typer.Option(help="Natural answer lengths are 1..this many tokens.")] = 64,
    embedding_dims: Annotated[int, typer.Option(help="Dimensions of the simulated embeddings.")] = 8,
) -> None:
    """Run the OpenAI-compatible simulator (rate limits, latency, faults) until Ctrl-C."""
    from batchchat.simulator.batch_config import BatchConfig, parse_enqueued_limits
    from batchchat.simulator.runner import serve_forever

    sequence = tuple(s.strip() for s in fault_sequence.split(",") if s.strip()) if fault_sequence else ()
    served = tuple(m.strip() for m in models.split(",") if m.strip()) if models is not None else DEFAULT_MODELS
    try:
        batch = BatchConfig(
            window_seconds=batch_window_seconds,
            validate_seconds=batch_validate_seconds,
            lines_per_second=batch_lines_per_second,
            finalize_seconds=batch_finalize_seconds,
            cancel_seconds=batch_cancel_seconds,
            failure_rate=batch_failure_rate,
            fail_all=batch_fail_all,
            enqueued_tokens=batch_enqueued_tokens,
            model_enqueued_tokens=parse_enqueued_limits(batch_model_enqueued_tokens or []),
            max_requests_per_file=batch_max_requests,
            max_file_bytes=batch_max_file_bytes,
            max_embedding_inputs=batch_max_embedding_inputs,
            upload_rpm=batch_upload_rpm,
            create_rpm=batch_create_rpm,
            upload_faults=tuple(s.strip() for s in (batch_upload_faults or "").split(",") if s.strip()),
            create_faults=tuple(s.strip() for s in (batch_create_faults or "").split(",") if s.strip()),
        )
        config = SimulatorConfig(
            rpm=rpm,
            tpm=tpm,
            limit_window=limit_window,
            rate_limit_headers=rate_limit_headers,
            model_limits=parse_model_limits(model_limit or []),
            limit_kind=limit_kind,
            limit_headers=limit_headers,
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
            batch=batch,
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
