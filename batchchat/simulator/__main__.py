"""`python -m batchchat.simulator [flags]`: the same as `batchchat serve [flags]`."""

import typer

from batchchat.simulator.command import serve

typer.run(serve)
