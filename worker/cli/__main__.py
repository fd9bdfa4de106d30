"""``python -m worker.cli``: the ``tradescribe`` command."""

from worker.cli import main

main()
