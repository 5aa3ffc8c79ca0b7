"""Small frozen value objects that describe a run: where requests go, how hard to retry, defaults for short
lines, and the whole run's settings. They import nothing heavier than the standard library."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from batchchat.errors import UsageError
from batchchat.input.shard import Shard
from batchchat.secrets import Secret

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROGRESS_MODES = ("auto", "bar", "log", "off")
ADAPT_MODES = ("auto", "on", "off")
TRANSPORTS = ("aiohttp", "httpx")
SHARED_FALLBACKS = ("stop", "local")
SHARED_SCHEMES = ("redis://", "rediss://")
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"
ENDPOINTS = (CHAT, EMBEDDINGS, COMPLETIONS, RESPONSES)
VIAS = ("online", "batch")
FALLBACKS = ("resubmit", "online")
INPUT_FORMATS = ("jsonl", "csv", "tsv", "parquet")  # --input-format; else by the input's extension
TABLE_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Where requests go and how they authenticate."""

    base_url: str = DEFAULT_BASE_URL
    api_key: Secret | None = None
    api_key_env: str = "OPENAI_API_KEY"
    azure_api_version: str | None = None  # set: Azure's `api-key` header and `?api-version=`
    extra_headers: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    transport: str = "aiohttp"  # or "httpx"

    def url_for(self, path: str) -> str:
        """The absolute URL of an endpoint path such as `/v1/chat/completions`, as the OpenAI SDK builds it.

        The base is used as given and the path is appended without its `/v1` (the default base,
        `https://api.openai.com/v1`, carries it): `http://host/v1beta/openai` + `/v1/chat/completions` is
        `http://host/v1beta/openai/chat/completions`. Azure adds its `?api-version=`.
        """
        base = self.base_url.rstrip("/")
        path = path[3:] if path.startswith("/v1/") else path
        if not self.azure_api_version:
            return base + path
        return f"{base}{path}?api-version={quote(self.azure_api_version, safe='')}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: attempts, a deadline for all of them, and the backoff curve."""

    max_attempts: int = 5
    deadline: float = 900.0  # seconds, first attempt to last, per request
    backoff_base: float = 0.5  # first backoff; doubles each time (with jitter)
    backoff_max: float = 8.0
    max_wait: float = 60.0  # cap on any one wait, a server's Retry-After included


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """Run-wide defaults that fill the `{"prompt": ...}` shorthand and bare bodies."""

    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    endpoint: str | None = None  # where bare bodies go; inferred from their fields when None


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """How `--via batch` splits, polls and recovers (the provider's Batch API)."""

    max_requests: int = 50_000  # lines per batch file
    max_bytes: int = 200_000_000  # bytes per batch file
    poll_interval: float = 30.0  # first wait between polls; grows while nothing changes ...
    poll_max: float = 300.0  # ... up to this
    no_wait: bool = False  # submit, then exit 0; the same command later collects
    fallback: str = "resubmit"  # what becomes of an expired/cancelled batch's unfinished lines: or "online"


@dataclass(frozen=True, slots=True)
class TableOptions:
    """How a CSV, TSV or Parquet input becomes requests (`input/table.py`): one request per row."""

    format: str | None = None  # --input-format; None: by the input's extension (.csv, .tsv, .parquet; else JSONL)
    template: str | None = None  # Jinja2, rendered with the row's columns: the prompt (None: the `prompt` column)
    system_template: str | None = None  # Jinja2: the system message (None: --system, or a `system` column)
    id_column: str | None = None  # the column holding each row's custom_id (None: `row-N`)

    def format_of(self, spec: str) -> str:
        """The input's format: the one given, else by its extension (JSONL when it has none of a table's)."""
        if self.format is not None:
            return self.format
        return TABLE_EXTENSIONS.get(Path(spec).suffix.lower(), "jsonl")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Everything a run needs to know; built once, never changed."""

    input: str  # a path, or "-" for standard input
    output: Path | None = None  # default: beside the input, NAME.results.jsonl
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    defaults: JobDefaults = field(default_factory=JobDefaults)
    rpm: float | None = None
    tpm: float | None = None
    # per-model limits (model, rpm, tpm) in place of rpm/tpm for the models named (--model-limit)
    model_limits: tuple[tuple[str, float | None, float | None], ...] = ()
    concurrency: int = 64
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    grace: float = 30.0  # seconds in-flight requests get to finish after Ctrl-C / SIGTERM
    strict: bool = False  # any invalid line stops the run before anything is sent
    progress: str = "auto"
    log_interval: float | None = None
    summary_json: Path | None = None
    adapt: str = "auto"  # auto: learn limits from headers, adapt concurrency without them; on; off
    burst_seconds: float = 0.5  # half of a one-second server window: room for arrival jitter
    handle_signals: bool = False
    resend_changed: bool = False  # a done id whose request changed is sent again instead of refusing the run
    limit: int | None = None  # a trial run: only the first N lines with work to do
    via: str = "online"  # or "batch": the provider's Batch API
    batch: BatchOptions = field(default_factory=BatchOptions)
    prices: Path | None = None  # a user price file (TOML/JSON) over the shipped table
    max_cost: float | None = None  # USD: the spending cap (None: no cap)
    shared: str | None = None  # redis://HOST:PORT/DB: budgets shared by every process on the key (a fleet)
    shared_timeout: float = 60.0  # seconds without the shared store before the run stops (exit 8) or falls back
    shared_fallback: str = "stop"  # or "local": local budgets when the shared store is lost (limits may be exceeded)
    cap_name: str | None = None  # the fleet's spending cap (--max-cost with --shared); None: from the input file
    shard: Shard | None = None  # run only the lines whose position modulo N is K
    table: TableOptions = field(default_factory=TableOptions)  # a CSV/TSV/Parquet input (--template, ...)
    cache: Path | None = None  # --cache: an SQLite file of answers reused across runs (batchchat/cache/)

    def output_path(self) -> Path:
        """Where results go."""
        if self.output is not None:
            return self.output
        if self.input == "-":  # two jobs read from stdin must not share (and resume from) one default file
            raise UsageError("reading standard input (-) needs an output: give -o OUTPUT")
        path = Path(self.input)
        stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
        if self.table.format_of(self.input) != "jsonl" and path.suffix.lower() in TABLE_EXTENSIONS:
            stem = path.stem  # data.csv -> data.results.jsonl
        shard = self.shard.suffix if self.shard is not None else ""
        return path.with_name(stem + shard + ".results.jsonl")

    def check(self) -> None:
        """Raise `UsageError` for values no run can work with."""
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be at least 1, got {self.limit}")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, got {self.concurrency}")
        for name, value in (("--rpm", self.rpm), ("--tpm", self.tpm)):
            if value is not None and value <= 0:
                raise UsageError(f"{name} must be a positive number, got {value:g} (leave it out for no limit)")
        if self.retry.max_attempts < 1:
            raise UsageError(f"--max-attempts must be at least 1, got {self.retry.max_attempts}")
        if self.retry.deadline <= 0:
            raise UsageError(f"--deadline must be positive, got {self.retry.deadline:g}")
        if self.grace < 0:
            raise UsageError(f"--grace must be 0 or more, got {self.grace:g}")
        if self.endpoint.read_timeout <= 0 or self.endpoint.connect_timeout <= 0:
            raise UsageError("--timeout and --connect-timeout must be positive")
        if self.adapt not in ADAPT_MODES:
            raise UsageError(f"--adapt must be one of {', '.join(ADAPT_MODES)}, got {self.adapt!r}")
        if self.progress not in PROGRESS_MODES:
            raise UsageError(f"--progress must be one of {', '.join(PROGRESS_MODES)}, got {self.progress!r}")
        if self.endpoint.transport not in TRANSPORTS:
            raise UsageError(f"--transport must be one of {', '.join(TRANSPORTS)}, got {self.endpoint.transport!r}")
        if self.defaults.endpoint is not None and self.defaults.endpoint not in ENDPOINTS:
            raise UsageError(f"--endpoint must be one of {', '.join(ENDPOINTS)}, got {self.defaults.endpoint!r}")
        if self.defaults.max_tokens is not None and self.defaults.max_tokens < 1:
            raise UsageError(f"--max-tokens must be at least 1, got {self.defaults.max_tokens}")
        if self.via not in VIAS:
            raise UsageError(f"--via must be one of {', '.join(VIAS)}, got {self.via!r}")
        if self.batch.fallback not in FALLBACKS:
            raise UsageError(f"--fallback must be one of {', '.join(FALLBACKS)}, got {self.batch.fallback!r}")
        if self.batch.max_requests < 1 or self.batch.max_bytes < 1:
            raise UsageError("--batch-max-requests and --batch-max-bytes must be at least 1")
        if self.batch.poll_interval <= 0:
            raise UsageError(f"--poll-interval must be positive, got {self.batch.poll_interval:g}")
        if self.max_cost is not None and not self.max_cost > 0:
            raise UsageError(f"--max-cost: must be more than zero, got {self.max_cost:g}")
        if self.shared is not None and not self.shared.startswith(SHARED_SCHEMES):
            scheme = self.shared.partition(":")[0] or self.shared[:10]  # never the rest: it may hold a password
            raise UsageError(f"--shared must be a Redis URL (redis://HOST:PORT/DB or rediss://...), got {scheme!r}...")
        if self.shared_timeout < 0:
            raise UsageError(f"--shared-timeout must be 0 or more, got {self.shared_timeout:g}")
        if self.shared_fallback not in SHARED_FALLBACKS:
            raise UsageError(f"--shared-fallback must be one of {', '.join(SHARED_FALLBACKS)}, "
                             f"got {self.shared_fallback!r}")
        if self.cap_name is not None and (self.shared is None or self.max_cost is None or not self.cap_name.strip()):
            raise UsageError("--cap-name names the spending cap a fleet shares: it needs --max-cost and --shared, "
                             f"and a name that is not empty (got {self.cap_name!r})")
        self._check_data_options()
        if not self.endpoint.base_url.startswith(("http://", "https://")):
            raise UsageError(f"--base-url must start with http:// or https://, got {self.endpoint.base_url!r}")

    def _check_data_options(self) -> None:
        """--input-format, the table flags and --cache (issue #24)."""
        table = self.table
        if table.format is not None and table.format not in INPUT_FORMATS:
            raise UsageError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}, got {table.format!r}")
        is_table = table.format_of(self.input) != "jsonl"
        given = [flag for flag, value in (("--template", table.template), ("--system-template", table.system_template),
                                          ("--id-column", table.id_column)) if value is not None]
        if given and not is_table:
            raise UsageError(f"{', '.join(given)} apply to a CSV, TSV or Parquet input; {self.input} is read as "
                             "JSONL (name the format with --input-format)")
        if is_table and self.output is not None and self.input != "-" and \
                Path(self.output).resolve() == Path(self.input).resolve():
            raise UsageError(f"output {self.output} is the input file; choose another -o")
        if self.cache is not None and self.via == "batch":
            raise UsageError("--cache works with --via online only for now (the Batch API path does not read or "
                             "fill the cache yet); drop --cache or run --via online")
