"""batchchat: push large batches of requests through an OpenAI-compatible API, fast, to the edge of the
rate limits, without losing or paying twice for a request.

    import batchchat
    summary = batchchat.run("jobs/demo.jsonl", "out.jsonl", base_url="http://127.0.0.1:8000/v1", rpm=600)
    for line in batchchat.iter_results("out.jsonl"):
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchchat._lazy import lazy_exports

if TYPE_CHECKING:
    from batchchat.api import arun, estimate, run, settings_for
    from batchchat.config.settings import RunSettings
    from batchchat.errors import BatchchatError, ExitCode
    from batchchat.output.lines import iter_results
    from batchchat.report.summary import Summary

# Imported on first use, so that `batchchat --help` does not pay for httpx and aiohttp.
_PUBLIC = {
    "arun": "batchchat.api",
    "run": "batchchat.api",
    "estimate": "batchchat.api",
    "settings_for": "batchchat.api",
    "RunSettings": "batchchat.config.settings",
    "BatchchatError": "batchchat.errors",
    "ExitCode": "batchchat.errors",
    "iter_results": "batchchat.output.lines",
    "Summary": "batchchat.report.summary",
}
__all__ = ["BatchchatError", "ExitCode", "RunSettings", "Summary", "arun", "estimate", "iter_results", "run",
           "settings_for"]
__version__ = "0.1.0"

__getattr__ = lazy_exports(__name__, _PUBLIC)
