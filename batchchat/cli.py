"""The `batchchat` command line: thin typer wiring over the engine and the simulator."""

from __future__ import annotations

import typer

from batchchat.simulator.command import serve

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.command("serve")(serve)


def main() -> None:
    """Entry point of the `batchchat` script."""
    app()
