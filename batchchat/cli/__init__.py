"""The `batchchat` command line: typer wiring that maps each command's flags to one function of `batchchat.api`."""

from batchchat.cli.commands import app, main

__all__ = ["app", "main"]
