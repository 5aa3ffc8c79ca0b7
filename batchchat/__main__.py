"""`python -m batchchat` runs the command-line interface."""

from batchchat.cli import main

main()
