"""Exit codes and the exceptions that map to them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented exit codes of `batchchat run` (see the README)."""

    OK = 0  # every request succeeded
    FAILURES = 1  # some requests failed; their output lines say why
    USAGE = 2  # usage or input error: nothing was sent
    FATAL = 3  # fatal endpoint error (bad key, forbidden): the run stopped early
    OUTPUT = 4  # the output could not be used: locked by another run, or a write failed mid-run
    SPENDING_CAP = 5  # --max-cost reached: dispatch stopped, in-flight requests finished; a higher cap resumes
    OUT_OF_CREDIT = 6  # the account is out of credit (429 insufficient_quota): the run stopped at once
    DEAD_ENDPOINT = 7  # the endpoint cannot be reached, or answers every request with the same failure
    SHARED_STORE_LOST = 8  # the shared budget store (--shared) stayed unreachable past --shared-timeout
    MISSING_IDS = 9  # `batchchat report`: ids of the input have no line in the output
    INTERRUPTED = 130  # stopped by Ctrl-C / SIGTERM: a rerun resumes


class BatchchatError(Exception):
    """Base of the errors that end a run with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(BatchchatError):
    """Bad flags, a bad input file or a bad output path: nothing was sent."""

    exit_code = ExitCode.USAGE


class OutputLockedError(BatchchatError):
    """Another run holds the output's lock."""

    exit_code = ExitCode.OUTPUT


class OutputWriteError(BatchchatError):
    """The output could not be written mid-run (disk full, file removed or read-only)."""

    exit_code = ExitCode.OUTPUT


class ResultCallbackError(BatchchatError):
    """A library caller's `on_result` callback raised: the run stopped (the exception is the `__cause__`)."""

    exit_code = ExitCode.OUTPUT


class FatalEndpointError(BatchchatError):
    """The endpoint refused the key (401/403) or does not exist: no further request can succeed."""

    exit_code = ExitCode.FATAL


class DeadEndpointError(BatchchatError):
    """The endpoint cannot be reached, or answered the first requests all with the same failure."""

    exit_code = ExitCode.DEAD_ENDPOINT
