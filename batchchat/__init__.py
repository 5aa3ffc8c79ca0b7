"""batchchat: push large batches of requests through an OpenAI-compatible API, fast, to the edge of the
rate limits, without losing or paying twice for a request.

    import batchchat
    summary = batchchat.run("jobs/demo.jsonl", "out.jsonl", base_url="http://127.0.0.1:8000/v1", rpm=600)
    for line in batchchat.iter_results("out.jsonl"):
        ...
"""

from batchchat.api import arun, run, settings_for
from batchchat.config import RunSettings
from batchchat.errors import BatchchatError, ExitCode
from batchchat.results import iter_results
from batchchat.summary import Summary

__all__ = ["BatchchatError", "ExitCode", "RunSettings", "Summary", "arun", "iter_results", "run", "settings_for"]
__version__ = "0.1.0"
