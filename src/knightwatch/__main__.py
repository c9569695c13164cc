"""`python -m knightwatch ...`: the same command as the `knightwatch` script.

Processes that start other knightwatch processes (the drill's node harness)
spawn `python -m knightwatch COMMAND`, never a CLI module by its path.
"""

from knightwatch.cli.app import main

main()
