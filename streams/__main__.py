"""``python -m streams`` runs the ``sluice`` command line."""

from streams.cli import main

main()
