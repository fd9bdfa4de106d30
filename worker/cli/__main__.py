"""``python -m worker.cli``: the ``tradescribe`` command."""

from worker.cli.app import main

main()
