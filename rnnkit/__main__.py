"""``python -m rnnkit``: the same command line as the ``rnnkit`` console script."""

from rnnkit.cli import main

main()
