"""Where the output goes, and whether it can be used."""

from __future__ import annotations

import os
from pathlib import Path

from batchchat.errors import UsageError


def check_output(output: Path, input_path: Path | None) -> None:
    """Raise `UsageError` when the output cannot be used."""
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"output directory {parent} does not exist")
    if output.is_dir():
        raise UsageError(f"output {output} is a directory")
    if output.exists() and not output.is_file():  # /dev/stdout, /dev/null, a FIFO: nothing to resume from
        raise UsageError(f"output {output} is not a regular file (a pipe, a terminal or a device); "
                         "use -o - to stream results to standard output, or give a file")
    if input_path is not None and output.resolve() == input_path.resolve():
        raise UsageError(f"output {output} is the input file; choose another -o")
    # no write bit at all is "not writable" even for root, as the writer judges it mid-run
    if output.exists() and (not os.access(output, os.W_OK) or not output.stat().st_mode & 0o222):
        raise UsageError(f"output {output} is not writable")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"output directory {parent} is not writable")
